"""The offline quickstart: built-in corpus, cached teacher, prune + distill vs scratch, results and plot."""

from __future__ import annotations

from hf_minitron.quickstart.corpus import builtin_corpus, corpus_fingerprint
from hf_minitron.quickstart.pipeline import format_summary, run_quickstart
from hf_minitron.quickstart.settings import QuickstartArguments
from hf_minitron.quickstart.teacher import (
    TeacherSettings,
    default_cache_dir,
    load_or_train_teacher,
    train_tokenizer,
)

__all__ = [
    "QuickstartArguments",
    "TeacherSettings",
    "builtin_corpus",
    "corpus_fingerprint",
    "default_cache_dir",
    "format_summary",
    "load_or_train_teacher",
    "run_quickstart",
    "train_tokenizer",
]
