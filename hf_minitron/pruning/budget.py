"""A parameter budget resolved to explicit sizes: Minitron's practical shape, only shapes the config accepts."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from hf_minitron.architectures import get_spec
from hf_minitron.counting import cost_model, count_parameters, pruned_config
from hf_minitron.pruning.config_update import config_error

logger = logging.getLogger(__name__)


def effective_multiple(size: int, multiple: int) -> int:
    """The step for a width of `size`: `multiple`, or for small models the largest power of two that still
    leaves at least 8 steps (64 for a hidden size of 4096; 8 for a tiny model's 64)."""
    step = max(1, int(multiple))
    while step > 1 and size < 8 * step:
        step //= 2
    return step


def check_budget(name: str, target, smallest, largest, unit: str = "") -> None:
    """`ValueError` naming the budget and the range this model can reach."""
    if target is None:
        return
    if target < smallest:
        raise ValueError(
            f"{name}={target:,}{unit} is below the smallest shape this model can be pruned to "
            f"({smallest:,.0f}{unit}: the smallest widths and depth allowed, embeddings and lm_head kept); "
            f"allowed {smallest:,.0f}..{largest:,.0f}{unit}"
        )
    if target > largest:
        raise ValueError(
            f"{name}={target:,}{unit} is larger than the model itself ({largest:,.0f}{unit}); "
            f"allowed {smallest:,.0f}..{largest:,.0f}{unit}"
        )


def accepted(model_config, shape: dict) -> bool:
    """Whether the model's own config class accepts `shape` (e.g. Llama's hidden % heads == 0)."""
    try:
        get_spec(model_config).check_sizes(
            model_config, {**get_spec(model_config).shape(model_config), **shape}
        )
    except ValueError:
        return False
    return config_error(pruned_config(model_config, shape), {}) is None


def resolve_target_params(model_config, pruning_config, tolerance: float = 0.05):
    """Minitron's practical shape for `pruning_config.target_params`: every width group stepped in multiples
    (hidden and MLP sizes) shrunk by a common factor, heads and layers kept (or as the config sets them).

    Returns a copy of `pruning_config` with explicit sizes and `target_params=None`. Sizes the config already
    sets are kept; only shapes the model's config class accepts are considered. Raises `ValueError` when no shape
    can meet the budget; logs a warning when the closest shape is outside `tolerance`.
    """
    target = pruning_config.target_params
    if target is None:
        return pruning_config
    spec = get_spec(model_config)
    base = spec.shape(model_config)
    fixed = dict(dataclasses.replace(pruning_config, target_params=None).target_sizes(model_config))
    fixed["num_hidden_layers"] = pruning_config.num_hidden_layers or base["num_hidden_layers"] - len(
        pruning_config.layers_to_drop or []
    )
    scaled = [
        k
        for g in spec.groups
        if g.search_step == "width"
        for k in g.config_keys
        if getattr(pruning_config, k) is None
    ]
    # One common factor for the scaled widths, each rounded to its own multiple; scanning the factor finely also
    # yields the combinations where one size rounded up and another down, so the budget is met closely.
    factors = np.linspace(0.0, 1.0, 4001)[1:]
    columns = []
    for key in scaled:
        step = effective_multiple(base[key], pruning_config.width_multiple)
        columns.append(np.clip(np.round(base[key] * factors / step) * step, step, base[key]))
    grid = np.unique(np.stack(columns, axis=1), axis=0) if columns else np.zeros((1, 0))
    sizes = {**fixed, **{k: grid[:, i] for i, k in enumerate(scaled)}}
    counts = cost_model(model_config).params(sizes)
    counts = np.broadcast_to(counts, (grid.shape[0],))
    largest = count_parameters(model_config)
    check_budget("target_params", target, float(np.min(counts)), largest)
    shape = None
    for best in np.argsort(np.abs(counts - target), kind="stable"):
        candidate = {**fixed, **{k: int(grid[best, i]) for i, k in enumerate(scaled)}}
        if accepted(model_config, candidate):
            shape = candidate
            break
    if shape is None:
        raise ValueError(
            f"target_params={target:,} is invalid: no shape near it is accepted by the config class"
        )
    exact = count_parameters(model_config, shape)
    if abs(exact - target) > tolerance * target:
        logger.warning(
            "target_params=%s: the closest common-factor shape has %s parameters (%.1f%% off); "
            "set num_hidden_layers or heads too, or use search_architectures to explore other shapes",
            f"{target:,}",
            f"{exact:,}",
            100 * (exact - target) / target,
        )
    return dataclasses.replace(pruning_config, **{k: shape[k] for k in scaled}, target_params=None)
