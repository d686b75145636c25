"""Parameter-budget architecture search (Minitron): enumerate the shapes that meet a budget, prune each from
the same importance scores, retrain each briefly by distillation, rank by loss."""

from __future__ import annotations

from hf_minitron.search.cost import count_parameters, flops_per_token, kv_cache_bytes_per_token
from hf_minitron.search.space import (
    Candidate,
    effective_multiple,
    enumerate_candidates,
    resolve_target_params,
)

__all__ = [
    "Candidate",
    "CandidateResult",
    "SearchResult",
    "count_parameters",
    "effective_multiple",
    "enumerate_candidates",
    "flops_per_token",
    "kv_cache_bytes_per_token",
    "prune_iteratively",
    "resolve_target_params",
    "search_architectures",
]


def __getattr__(name):
    if name in ("CandidateResult", "SearchResult", "search_architectures", "prune_iteratively"):
        from hf_minitron.search import run

        return getattr(run, name)
    raise AttributeError(f"module 'hf_minitron.search' has no attribute {name!r}")
