"""Costs of shapes (moved to `hf_minitron.counting`; kept importable here)."""

from __future__ import annotations

from hf_minitron.counting import (  # noqa: F401
    CostModel,
    cost_model,
    count_parameters,
    flops_per_token,
    head_dim_of,
    kv_cache_bytes_per_token,
    pruned_config,
    shape_of,
)
