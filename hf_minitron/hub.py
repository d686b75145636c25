"""Model cards and Hub upload: a run record (`hf_minitron.json`) rendered into README.md, pushed as one commit."""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from hf_minitron.io import atomic_write_text

__all__ = [
    "RECORD_NAME",
    "architecture_summary",
    "base_model_license",
    "list_upload_files",
    "load_record",
    "push_folder",
    "recorded_command",
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
    """Parameters, hidden size, MLP size, heads, KV heads and layers of a model (or a config)."""
    config = getattr(model_or_config, "config", model_or_config)
    summary = {
        "model_type": getattr(config, "model_type", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "intermediate_size": getattr(config, "intermediate_size", None),
        "num_attention_heads": getattr(config, "num_attention_heads", None),
        "num_key_value_heads": getattr(config, "num_key_value_heads", None)
        or getattr(config, "num_attention_heads", None),
        "num_hidden_layers": getattr(config, "num_hidden_layers", None),
        "head_dim": getattr(config, "head_dim", None),
        "vocab_size": getattr(config, "vocab_size", None),
    }
    if hasattr(model_or_config, "parameters"):
        summary["parameters"] = sum(p.numel() for p in model_or_config.parameters())
    return summary


def recorded_command(argv: list[str] | None = None) -> str:
    """The command line that is running, quoted for a shell, with any Hugging Face token value redacted."""
    argv = list(sys.argv if argv is None else argv)
    if argv and os.path.basename(argv[0]) in ("hf-minitron", "__main__.py"):
        argv[0] = "hf-minitron"
    secrets = [v for v in (os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")) if v]
    out = []
    for arg in argv:
        for secret in secrets:
            arg = arg.replace(secret, "<redacted>")
        out.append(arg)
    return shlex.join(out)


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


_ARCH_ROWS = [
    ("parameters", "parameters"),
    ("hidden size", "hidden_size"),
    ("MLP size", "intermediate_size"),
    ("attention heads", "num_attention_heads"),
    ("KV heads", "num_key_value_heads"),
    ("layers", "num_hidden_layers"),
    ("head dim", "head_dim"),
]


def _eval_results(record: dict[str, Any]):
    from huggingface_hub import EvalResult

    results = []
    for ev in record.get("evaluations", []):
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
    (list of `{dataset, metric, value, split}`), `datasets`, `plot`, `commands`.
    """
    from huggingface_hub import ModelCard, ModelCardData

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
    rows = [
        {"name": label, "before": _fmt(before.get(k)), "after": _fmt(after.get(k))} for label, k in _ARCH_ROWS
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
    """Write `hf_minitron.json` and the rendered README.md into `folder`; returns the README path."""
    folder = Path(folder)
    card = render_model_card(record, repo_id=repo_id)
    atomic_write_text(folder / RECORD_NAME, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    atomic_write_text(folder / "README.md", str(card))
    return folder / "README.md"


def list_upload_files(folder: str | os.PathLike) -> list[tuple[str, int]]:
    """Files `push_folder` uploads: `(path in repo, size in bytes)`, sorted; hidden files and checkpoints skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(p in _IGNORED_PARTS or p.startswith(_IGNORED_PREFIXES) for p in rel.parts):
            continue
        if path.is_file():
            files.append((rel.as_posix(), path.stat().st_size))
    if not files:
        raise ValueError(f"{root} has no files to upload")
    return files


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    commit_message: str | None = None,
    dry_run: bool = False,
    revision: str | None = None,
) -> dict[str, Any]:
    """Upload a model folder to the Hub as one commit (the repo is created if needed).

    The model card is re-rendered for `repo_id` first (usage snippet). The token comes from the usual
    Hugging Face login or `HF_TOKEN`; it is never written to a file or logged. With `dry_run=True` nothing
    touches the network and the files that would be uploaded are returned.

    Returns:
        `dict` with `repo_id`, `files` (list of `{path, size}`), and, unless `dry_run`, `commit_url` and `commit_oid`.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    record = load_record(folder)
    if record is not None and not dry_run:
        write_model_card(folder, record, repo_id=repo_id)
    files = list_upload_files(folder)
    result: dict[str, Any] = {"repo_id": repo_id, "files": [{"path": p, "size": s} for p, s in files]}
    if dry_run:
        result["dry_run"] = True
        return result
    api = HfApi()
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
