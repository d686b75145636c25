"""Argument dataclasses of the CLI and the YAML recipe format (`--config`).

A recipe is a YAML mapping with these top-level sections; the keys of each section are exactly the fields of
its dataclass, so a key and the matching command-line flag are the same name (`seq_len:` and `--seq_len` /
`--seq-len`). Command-line flags override the recipe; an unknown section or key is an error.

| section        | dataclass                                   | used by                  |
|----------------|---------------------------------------------|--------------------------|
| `model`        | `ModelArguments` (or a plain string: the id) | prune (MODEL), distill (--teacher), eval |
| `data`         | `DataArguments`                             | prune, distill           |
| `pruning`      | `hf_minitron.PruningConfig`                 | prune                    |
| `distillation` | `hf_minitron.DistillationArguments`         | distill                  |
| `eval`         | `EvalArguments`                             | eval                     |
| `quickstart`   | `hf_minitron.quickstart.QuickstartArguments`| quickstart               |
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DataArguments",
    "EvalArguments",
    "ModelArguments",
    "SECTIONS",
    "load_recipe",
    "resolve_recipe_path",
]


@dataclass
class ModelArguments:
    """How the source model is loaded (`from_pretrained` semantics)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or local folder of the source model (the positional MODEL)."}
    )
    dtype: str = field(
        default="auto", metadata={"help": "Weights dtype: auto, float32, bfloat16 or float16."}
    )
    device_map: str | None = field(
        default=None, metadata={"help": "`device_map` for from_pretrained, e.g. auto."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom modeling code from the Hub."}
    )
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})


@dataclass
class DataArguments:
    """Text for calibration (prune) and training (distill): local .txt/.jsonl/.parquet files or `datasets` names."""

    data: str | None = field(default=None, metadata={"help": "Training text (distill); calibration default."})
    data_split: str = field(default="train", metadata={"help": "Split of a `datasets` dataset for --data."})
    eval_data: str | None = field(
        default=None, metadata={"help": "Held-out text evaluated during distillation."}
    )
    eval_split: str = field(
        default="validation", metadata={"help": "Split of a `datasets` dataset for --eval_data."}
    )
    calibration_data: str | None = field(
        default=None, metadata={"help": "Calibration text for importance estimation (default: --data)."}
    )
    calibration_samples: int = field(default=1024, metadata={"help": "Calibration blocks (Minitron: 1024)."})
    calibration_batch_size: int = field(default=8, metadata={"help": "Blocks per calibration forward pass."})
    seq_len: int = field(default=2048, metadata={"help": "Tokens per block (capped at the model's context)."})
    text_column: str = field(default="text", metadata={"help": "Column or JSON key holding the text."})
    dataset_config: str | None = field(
        default=None, metadata={"help": "Configuration of a `datasets` dataset."}
    )
    max_texts: int | None = field(default=None, metadata={"help": "Use at most this many documents."})


@dataclass
class EvalArguments:
    """What `hf-minitron eval` measures."""

    data: str | None = field(
        default=None, metadata={"help": "Held-out text for perplexity (file or dataset)."}
    )
    split: str = field(default="test", metadata={"help": "Split of a `datasets` dataset."})
    text_column: str = field(default="text", metadata={"help": "Column or JSON key holding the text."})
    dataset_config: str | None = field(
        default=None, metadata={"help": "Configuration of a `datasets` dataset."}
    )
    seq_len: int = field(default=2048, metadata={"help": "Tokens per block (capped at the model's context)."})
    batch_size: int = field(default=8, metadata={"help": "Blocks per forward pass."})
    max_blocks: int | None = field(default=None, metadata={"help": "Evaluate at most this many blocks."})
    tasks: list[str] | None = field(
        default=None, metadata={"help": "lm-evaluation-harness tasks (needs lm_eval)."}
    )
    num_fewshot: int | None = field(default=None, metadata={"help": "Few-shot examples for --tasks."})
    limit: int | None = field(
        default=None, metadata={"help": "Examples per task for --tasks (for quick checks)."}
    )
    update_card: bool = field(default=True, metadata={"help": "Add the results to the model folder's card."})


def _quickstart_arguments():
    return importlib.import_module("hf_minitron.quickstart.settings").QuickstartArguments


def _pruning_config():
    return importlib.import_module("hf_minitron.config").PruningConfig


def _distillation_arguments():
    return importlib.import_module("hf_minitron.distillation").DistillationArguments


# Section name -> function returning its dataclass (imported lazily: DistillationArguments pulls transformers).
SECTIONS = {
    "model": lambda: ModelArguments,
    "data": lambda: DataArguments,
    "pruning": _pruning_config,
    "distillation": _distillation_arguments,
    "eval": lambda: EvalArguments,
    "quickstart": _quickstart_arguments,
}


def field_names(cls: type) -> set[str]:
    """Init fields of a dataclass."""
    return {f.name for f in dataclasses.fields(cls) if f.init}


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file path, or the name of a recipe shipped with hf-minitron (`llama-3.1-8b-to-4b-width`)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    name = str(name_or_path)
    if "/" not in name and not name.endswith((".yaml", ".yml")):
        from importlib import resources

        for base in (
            resources.files("hf_minitron") / "recipes",
            Path(__file__).resolve().parents[2] / "recipes",
        ):
            candidate = Path(str(base)) / f"{name}.yaml"
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"recipe not found: {name_or_path} (a YAML file or a shipped recipe name)")


def load_recipe(name_or_path: str | Path, sections: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Load and check a YAML recipe: `{section: {field: value}}`.

    Every section and key is checked, not only those in `sections`, so a typo anywhere is an error
    (`ValueError` naming the file, the section and the unknown keys with the valid ones). `model:` may be a
    plain string, short for `{model_name_or_path: ...}`.
    """
    import yaml

    path = resolve_recipe_path(name_or_path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a recipe is a mapping of sections ({', '.join(SECTIONS)})")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; valid sections: {list(SECTIONS)}")
    out: dict[str, dict[str, Any]] = {}
    for name, values in raw.items():
        if name == "model" and isinstance(values, str):
            values = {"model_name_or_path": values}
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: section {name!r} must be a mapping of field: value")
        cls = SECTIONS[name]()
        bad = sorted(set(values) - field_names(cls))
        if bad:
            raise ValueError(
                f"{path}: unknown key(s) {bad} in section {name!r}; valid keys are the fields of {cls.__name__}: "
                f"{sorted(field_names(cls))}"
            )
        if sections is None or name in sections:
            out[name] = dict(values)
    return out


def dataclass_from_namespace(cls: type, namespace: Any, **overrides: Any):
    """Build `cls` from the attributes of an argparse namespace that are its fields."""
    values = {name: getattr(namespace, name) for name in field_names(cls) if hasattr(namespace, name)}
    values.update(overrides)
    return cls(**values)
