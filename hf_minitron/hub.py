"""Model cards and Hub upload: a run record (`hf_minitron.json`) rendered into README.md, pushed as one commit."""

from __future__ import annotations

import json
import logging
import mmap
import os
import re
import shlex
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from hf_minitron.io import atomic_write_text

__all__ = [
    "PICKLE_SUFFIXES",
    "RECORD_NAME",
    "active_tokens",
    "architecture_summary",
    "base_model_license",
    "check_no_token",
    "list_upload_files",
    "load_record",
    "public_record",
    "public_text",
    "push_folder",
    "recorded_command",
    "redact",
    "render_model_card",
    "template_path",
    "write_model_card",
]

logger = logging.getLogger(__name__)

RECORD_NAME = "hf_minitron.json"
BASE_TAGS = ["pruned", "minitron", "hf-minitron"]
# Never uploaded: version control, caches, staging folders of hf_minitron.io and training checkpoints.
_IGNORED_PARTS = {".git", ".cache", "__pycache__", ".ipynb_checkpoints"}
_IGNORED_PREFIXES = ("checkpoint-", ".")
# Pickles run code when loaded: never uploaded (training_args.bin, optimizer / scheduler / RNG states, .bin weights).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
REDACTED = "<redacted>"
# A Hugging Face access token (`hf_` and 34 letters/digits today); a flag whose name ends in "token" carries one.
_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{30,}")
_TOKEN_FLAG = re.compile(r"^--?(?:[\w-]*[_-])?token$")
# An absolute path (POSIX or `~`) inside a string; only its last component is kept in what is meant for upload.
_ABS_PATH = re.compile(r"(?<![\w.:/~-])(?:~|/)[^\s'\"`,;()\[\]]+")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?$")
_DATA_SUFFIXES = (".txt", ".md", ".rst", ".json", ".jsonl", ".parquet", ".csv", ".tsv", ".arrow")


def template_path() -> Path:
    """The Jinja template of the model card, from the installed package or the source tree's `model_cards/`."""
    packaged = resources.files("hf_minitron") / "templates" / "model_card.md"
    if packaged.is_file():
        return Path(str(packaged))
    source = Path(__file__).resolve().parent.parent / "model_cards" / "model_card.md"
    if source.is_file():
        return source
    raise FileNotFoundError("model card template not found (hf_minitron/templates/model_card.md)")


def architecture_summary(model_or_config: Any) -> dict[str, Any]:
    """Parameters and every prunable size (the spec's shape summary) of a model or a config."""
    config = getattr(model_or_config, "config", model_or_config)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    summary: dict[str, Any] = {"model_type": getattr(config, "model_type", None)}
    try:
        from hf_minitron.architectures import get_spec

        summary.update(get_spec(config).shape(config))
    except (
        ValueError
    ):  # a family hf-minitron does not prune (a teacher of another kind): what the config says
        summary.update(
            {
                k: getattr(text, k, None)
                for k in ("hidden_size", "num_hidden_layers")
                if getattr(text, k, None)
            }
        )
    summary["vocab_size"] = getattr(text, "vocab_size", None)
    if hasattr(model_or_config, "parameters"):
        # a ZeRO-3 partitioned parameter holds a slice (or nothing) locally; `ds_numel` is its full size
        summary["parameters"] = sum(getattr(p, "ds_numel", p.numel()) for p in model_or_config.parameters())
        try:  # a mixture-of-experts model: what a token touches, next to what is stored
            from hf_minitron.counting import count_active_parameters, count_parameters

            total, active = count_parameters(config), count_active_parameters(config)
            if active != total:
                summary["active_parameters"] = summary["parameters"] - (total - active)
        except ValueError:
            pass
    return summary


def active_tokens(token: str | None = None) -> list[str]:
    """Every Hub token this process could use: `token`, `HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`, the stored login(s)."""
    found = [token, os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")]
    try:  # read the files directly: `get_token()` may refresh or exchange a token over the network
        from huggingface_hub import constants
        from huggingface_hub.utils import get_stored_tokens

        path = Path(constants.HF_TOKEN_PATH)
        if path.is_file():
            found.append(path.read_text(encoding="utf-8"))
        found.extend(get_stored_tokens().values())
    except Exception:  # an unreadable token file holds nothing we could leak
        pass
    return sorted({t.strip() for t in found if t and len(t.strip()) >= 8}, key=len, reverse=True)


def redact(text: str, tokens: list[str] | None = None) -> str:
    """`text` with every known token (see `active_tokens`) and anything shaped like an `hf_` token replaced."""
    for secret in active_tokens() if tokens is None else tokens:
        text = text.replace(secret, REDACTED)
    return _TOKEN_PATTERN.sub(REDACTED, text)


def recorded_command(argv: list[str] | None = None) -> str:
    """The command line that is running, quoted for a shell, with every token redacted.

    The value of any flag named like a token (`--hub_token`, `--hub-token`, `--token`, `--token=...`), the
    active tokens (`active_tokens`) and anything shaped like an `hf_` token become `<redacted>`.
    """
    argv = list(sys.argv if argv is None else argv)
    if argv and os.path.basename(argv[0]) in ("hf-minitron", "__main__.py"):
        argv[0] = "hf-minitron"
    tokens = active_tokens()
    out, hide_next = [], False
    for arg in argv:
        if hide_next and not arg.startswith("--"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        flag, eq, _ = arg.partition("=")
        if arg.startswith("-") and _TOKEN_FLAG.match(flag):
            if eq:
                arg = f"{flag}={REDACTED}"
            else:
                hide_next = True
        out.append(redact(arg, tokens))
    return shlex.join(out)


def _is_local(value: str) -> bool:
    """Whether a data or model name is a file or folder of this machine rather than a Hub id."""
    if not _HUB_ID.match(value) or value.lower().endswith(_DATA_SUFFIXES):
        return True
    try:
        return Path(value).expanduser().exists()
    except OSError:
        return True


def public_text(text: str, tokens: list[str] | None = None) -> str:
    """`text` fit for upload: tokens redacted (`redact`), every absolute path cut to its last component."""
    return _ABS_PATH.sub(lambda m: Path(m.group(0).rstrip("/")).name or m.group(0), redact(text, tokens))


def public_record(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a run record fit for upload: tokens redacted, absolute paths cut to their last component,
    local data sets marked `local` (kept out of the Hub metadata), `datasets` limited to Hub ids."""
    tokens = active_tokens()

    def clean(value):
        if isinstance(value, str):
            return public_text(value, tokens)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    record = dict(record)
    evaluations = []
    for ev in record.get("evaluations") or []:
        ev = dict(ev)
        if ev.get("local") or _is_local(str(ev.get("dataset", ""))):
            ev["local"] = True
            ev.pop("dataset_type", None)
        elif ev.get("dataset_type") and _is_local(str(ev["dataset_type"])):
            ev.pop("dataset_type")
        evaluations.append(ev)
    if "evaluations" in record:
        record["evaluations"] = evaluations
    if "datasets" in record:
        record["datasets"] = [d for d in record["datasets"] or [] if d and not _is_local(str(d))]
    base = record.get("base_model")
    if base and _is_local(str(base)):
        record["base_model_on_hub"] = False
    return clean(record)


def base_model_license(model_name_or_path: str) -> str | None:
    """License of the base model from its card (a local folder, or the Hub / its cache); None when unknown."""
    from huggingface_hub import ModelCard, hf_hub_download

    local = Path(model_name_or_path)
    try:
        if local.exists():
            card_path = local / "README.md"
            if not card_path.is_file():
                return None
        else:
            card_path = hf_hub_download(model_name_or_path, "README.md", etag_timeout=5)
        return getattr(ModelCard.load(card_path).data, "license", None)
    except Exception:  # offline, gated, no card: the license stays unknown
        return None


def load_record(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The run record of a model folder written by hf-minitron, or None."""
    path = Path(folder) / RECORD_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and abs(value) >= 10_000:
        return (
            f"{value / 1e9:.2f}B" if value >= 1e9 else f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value:,}"
        )
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _eval_results(record: dict[str, Any]):
    from huggingface_hub import EvalResult

    results = []
    for ev in record.get("evaluations", []):
        if ev.get("local"):  # a file of this machine: named in the card's text, not in the Hub metadata
            continue
        results.append(
            EvalResult(
                task_type=ev.get("task_type", "text-generation"),
                task_name=ev.get("task_name", "Language modeling"),
                dataset_type=ev.get("dataset_type") or ev["dataset"],
                dataset_name=ev["dataset"],
                dataset_split=ev.get("split"),
                metric_type=ev["metric"],
                metric_name=ev.get("metric_name", ev["metric"]),
                metric_value=ev["value"],
            )
        )
    return results or None


def render_model_card(record: dict[str, Any], repo_id: str | None = None):
    """Render the model card (`huggingface_hub.ModelCard`) of a run record.

    The record is the dict hf-minitron keeps next to the model (`hf_minitron.json`): `base_model`, `license`,
    `architecture` (`before` / `after`, see `architecture_summary`), `pruning`, `distillation`, `evaluations`
    (list of `{dataset, metric, value, split}`), `datasets`, `plot`, `commands`. It is rendered through
    `public_record`: no token, no absolute path, only Hub ids in the metadata.
    """
    from huggingface_hub import ModelCard, ModelCardData

    record = public_record(record)
    name = record.get("model_name") or (repo_id.split("/")[-1] if repo_id else "pruned-model")
    base = record.get("base_model")
    tags = list(BASE_TAGS) + (["distilled"] if record.get("distillation") else [])
    data = ModelCardData(
        base_model=base
        if base and record.get("base_model_on_hub", True) and not Path(base).exists()
        else None,
        library_name="transformers",
        pipeline_tag="text-generation",
        license=record.get("license"),
        tags=tags,
        datasets=[d for d in record.get("datasets", []) if d] or None,
        model_name=name,
        eval_results=_eval_results(record),
    )
    arch = record.get("architecture", {})
    before, after = arch.get("before", {}), arch.get("after", {})
    counts = ("parameters", "active_parameters")
    keys = [k for k in counts if k in before or k in after]
    keys += [k for k in {**before, **after} if k not in (*counts, "model_type")]
    rows = [
        {
            "name": k.replace("_", " ") if k in counts else f"`{k}`",
            "before": _fmt(before.get(k)),
            "after": _fmt(after.get(k)),
        }
        for k in keys
    ]
    pruning = record.get("pruning")
    pruning_view = None
    if pruning:
        from hf_minitron.config import PruningConfig

        defaults = PruningConfig().to_dict()
        targets = {k: v for k, v in (pruning.get("config") or {}).items() if v != defaults.get(k, object())}
        shown = ("importance", "batch_aggregation", "sequence_aggregation", "depth_metric", "num_samples")
        imp = {k: v for k, v in (pruning.get("importance") or {}).items() if k in shown}
        pruning_view = {
            "targets": ", ".join(f"`{k}={v}`" for k, v in targets.items()) or "none",
            "importance": ", ".join(f"{k}={v}" for k, v in imp.items()) or "-",
            "calibration": f"`{pruning.get('calibration_data')}`, {pruning.get('calibration_samples')} samples of "
            f"{pruning.get('seq_len')} tokens",
        }
    dist = record.get("distillation")
    dist_view = None
    if dist:
        dist_view = {
            "teacher": dist.get("teacher"),
            "data": f"`{dist.get('data')}`",
            "tokens": f"{dist.get('tokens'):,}"
            if isinstance(dist.get("tokens"), int)
            else dist.get("tokens"),
            "settings": ", ".join(f"{k}={v}" for k, v in (dist.get("settings") or {}).items()),
        }
    evaluation_rows = [
        {"dataset": f"`{e['dataset']}`" + (f" ({e['split']})" if e.get("split") else ""), "metric": e["metric"],
         "value": _fmt(e["value"])}
        for e in record.get("evaluations", [])
    ]  # fmt: skip
    license_id = record.get("license")
    license_text = (
        f"Inherited from the base model `{base}`: `{license_id}`. Use is subject to the base model's license."
        if license_id
        else f"The license of the base model `{base}` applies; it could not be read when this card was written."
    )
    before_params, after_params = before.get("parameters"), after.get("parameters")
    summary = f"A pruned version of `{base}`" + (" retrained by knowledge distillation" if dist else "") + "."
    if before_params and after_params:
        summary += f" It keeps {after_params / before_params:.0%} of the parameters ({_fmt(after_params)} of {_fmt(before_params)})."
    return ModelCard.from_template(
        data,
        template_path=str(template_path()),
        model_name=name,
        repo_id=repo_id or name,
        summary=summary,
        base_model_label=f"`{base}`" if base else "base model",
        architecture_rows=rows,
        pruning=pruning_view,
        distillation=dist_view,
        evaluation_rows=evaluation_rows,
        comparison_rows=[
            {"model": c["model"], "parameters": _fmt(c["parameters"]), "perplexity": _fmt(c["perplexity"])}
            for c in record.get("comparison", [])
        ],
        plot=record.get("plot"),
        plot_caption=record.get("plot_caption", "held-out loss"),
        commands=record.get("commands") or ["# not recorded"],
        license_text=license_text,
    )


def write_model_card(folder: str | os.PathLike, record: dict[str, Any], repo_id: str | None = None) -> Path:
    """Write `hf_minitron.json` and the rendered README.md into `folder` (both through `public_record`); returns
    the README path."""
    folder = Path(folder)
    record = public_record(record)
    card = render_model_card(record, repo_id=repo_id)
    atomic_write_text(folder / RECORD_NAME, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    atomic_write_text(folder / "README.md", str(card))
    return folder / "README.md"


def _scan_folder(root: Path) -> tuple[list[tuple[str, int]], list[dict[str, str]]]:
    files, skipped = [], []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(p in _IGNORED_PARTS or p.startswith(_IGNORED_PREFIXES) for p in rel.parts):
            continue
        if not path.is_file():
            continue
        if path.suffix.lower() in PICKLE_SUFFIXES:
            skipped.append({"path": rel.as_posix(), "reason": "pickle (runs code when loaded)"})
            continue
        files.append((rel.as_posix(), path.stat().st_size))
    return files, skipped


def list_upload_files(folder: str | os.PathLike) -> list[tuple[str, int]]:
    """Files `push_folder` uploads: `(path in repo, size in bytes)`, sorted; hidden files, checkpoints and
    pickles (`PICKLE_SUFFIXES`, e.g. `training_args.bin`, `optimizer.pt`) skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    files, _ = _scan_folder(root)
    if not files:
        raise ValueError(f"{root} has no files to upload")
    return files


def _contains(path: Path, secrets: list[bytes]) -> bool:
    """Whether a file holds one of `secrets` (memory-mapped: weights are not read into memory)."""
    if path.stat().st_size == 0:
        return False
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return any(data.find(secret) != -1 for secret in secrets)


def check_no_token(folder: str | os.PathLike, paths: list[str], token: str | None = None) -> None:
    """Raise ValueError when one of `paths` (relative to `folder`) holds an active Hub token (`active_tokens`)."""
    secrets = [t.encode() for t in active_tokens(token)]
    if not secrets:
        return
    leaked = [p for p in paths if _contains(Path(folder) / p, secrets)]
    if leaked:
        raise ValueError(
            f"refusing to upload: {', '.join(leaked)} contain(s) your Hugging Face token; delete the token from "
            "these files (or the files) and push again"
        )


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    commit_message: str | None = None,
    dry_run: bool = False,
    revision: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """Upload a model folder to the Hub as one commit (the repo is created if needed).

    The model card is re-rendered for `repo_id` first (usage snippet). The token is `token`, or the usual
    Hugging Face login or `HF_TOKEN`; it is never written to a file or logged. Pickles (`PICKLE_SUFFIXES`)
    are never uploaded (listed in `skipped`), and nothing is uploaded when a file holds an active token.
    With `dry_run=True` nothing touches the network and the files that would be uploaded are returned.

    Returns:
        `dict` with `repo_id`, `files` (list of `{path, size}`), `skipped` (list of `{path, reason}`), and,
        unless `dry_run`, `commit_url` and `commit_oid`.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    record = load_record(folder)
    if record is not None and not dry_run:
        write_model_card(folder, record, repo_id=repo_id)
    files = list_upload_files(folder)
    _, skipped = _scan_folder(folder)
    for entry in skipped:
        logger.warning("not uploading %s: %s", entry["path"], entry["reason"])
    check_no_token(folder, [p for p, _ in files], token)
    result: dict[str, Any] = {
        "repo_id": repo_id,
        "files": [{"path": p, "size": s} for p, s in files],
        "skipped": skipped,
    }
    if dry_run:
        result["dry_run"] = True
        return result
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p)) for p, _ in files]
    info = api.create_commit(
        repo_id,
        operations=operations,
        commit_message=commit_message or f"Upload {folder.name} with hf-minitron",
        repo_type="model",
        revision=revision,
    )
    result.update(commit_url=getattr(info, "commit_url", None), commit_oid=getattr(info, "oid", None))
    return result
