"""Minitron structured pruning and knowledge distillation for transformers causal LMs."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
# The transformers floor declared in pyproject.toml (tests/test_dependencies.py keeps them equal).
MIN_TRANSFORMERS_VERSION = "5.23.0"


def _check_transformers(version: str | None = None) -> None:
    """Refuse, at import, a transformers older than the floor (it would fail later, deep inside a run)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    from packaging.version import Version

    try:
        version = version or installed("transformers")
    except PackageNotFoundError:
        return  # not installed: the first transformers import says so
    if Version(version) < Version(MIN_TRANSFORMERS_VERSION):
        raise ImportError(
            f"hf-minitron needs transformers>={MIN_TRANSFORMERS_VERSION},<6 (found {version}): "
            f"pip install -U 'transformers>={MIN_TRANSFORMERS_VERSION},<6'"
        )


_check_transformers()

# Public name -> submodule that defines it; imported on first access so that
# `import hf_minitron` stays cheap and the CLI starts fast.
_LAZY = {
    "ArchitectureSpec": "hf_minitron.architectures",
    "DistillationArguments": "hf_minitron.distillation",
    "DistillationTrainer": "hf_minitron.distillation",
    "ImportanceScores": "hf_minitron.importance",
    "PruningConfig": "hf_minitron.config",
    "SearchResult": "hf_minitron.search",
    "TeacherLogitsDataset": "hf_minitron.distillation",
    "compute_teacher_logits": "hf_minitron.distillation",
    "correct_teacher": "hf_minitron.distillation",
    "estimate_importance": "hf_minitron.importance",
    "get_spec": "hf_minitron.architectures",
    "prune_model": "hf_minitron.pruning",
    "search_architectures": "hf_minitron.search",
    "supported_model_types": "hf_minitron.architectures",
}

__all__ = [
    "ArchitectureSpec",
    "DistillationArguments",
    "DistillationTrainer",
    "ImportanceScores",
    "PruningConfig",
    "SearchResult",
    "TeacherLogitsDataset",
    "__version__",
    "compute_teacher_logits",
    "correct_teacher",
    "estimate_importance",
    "get_spec",
    "prune_model",
    "search_architectures",
    "supported_model_types",
]

if TYPE_CHECKING:
    from hf_minitron.architectures import ArchitectureSpec, get_spec, supported_model_types
    from hf_minitron.config import PruningConfig
    from hf_minitron.distillation import (
        DistillationArguments,
        DistillationTrainer,
        TeacherLogitsDataset,
        compute_teacher_logits,
        correct_teacher,
    )
    from hf_minitron.importance import ImportanceScores, estimate_importance
    from hf_minitron.pruning import prune_model
    from hf_minitron.search import SearchResult, search_architectures


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hf_minitron' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
