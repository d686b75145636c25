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
    spec = get_spec(model_config)
    experts = next((g for g in spec.groups if g.lower_bound), None)
    if experts is not None and experts.key in cost_model(model_config).variables:  # a layer has experts
        return resolve_expert_budget(model_config, pruning_config, tolerance)
    if pruning_config.target_active_params is not None:  # a dense model touches every parameter per token
        if pruning_config.target_params not in (None, pruning_config.target_active_params):
            raise ValueError(
                f"target_active_params={pruning_config.target_active_params:,} is invalid with target_params="
                f"{pruning_config.target_params:,}: a dense model touches all its parameters per token, so "
                "allowed None or the same value"
            )
        pruning_config = dataclasses.replace(
            pruning_config, target_params=pruning_config.target_active_params, target_active_params=None
        )
    target = pruning_config.target_params
    if target is None:
        return pruning_config
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
    kept = None
    if pruning_config.layers_to_drop:  # layers may differ in cost (hybrids): count the ones that stay
        remaining = [
            i for i in range(base["num_hidden_layers"]) if i not in set(pruning_config.layers_to_drop)
        ]
        kept = lambda n: remaining if n == len(remaining) else range(n)  # noqa: E731
    counts = cost_model(model_config).params(sizes, kept)
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
    exact = count_parameters(model_config, shape, kept(shape["num_hidden_layers"]) if kept else None)
    if abs(exact - target) > tolerance * target:
        logger.warning(
            "target_params=%s: the closest common-factor shape has %s parameters (%.1f%% off); "
            "set num_hidden_layers or heads too, or use search_architectures to explore other shapes",
            f"{target:,}",
            f"{exact:,}",
            100 * (exact - target) / target,
        )
    return dataclasses.replace(pruning_config, **{k: shape[k] for k in scaled}, target_params=None)


def resolve_expert_budget(model_config, pruning_config, tolerance: float = 0.05):
    """Budgets of a mixture-of-experts model, as REAP and Minitron's MoE recipes cut it: `target_active_params`
    sets the expert width (what a token runs), then `target_params` the number of experts per layer (what is
    stored); every other size stays as the config sets it. Counts are exact: for fixed other sizes, total and
    active counts are bilinear in (experts, expert width), fitted from four meta-device models.

    Returns a copy of `pruning_config` with explicit sizes and no budget; `ValueError` naming the budget and the
    reachable range when it cannot be met.
    """
    from hf_minitron.counting import count_active_parameters

    spec = get_spec(model_config)
    experts = next(g for g in spec.groups if g.lower_bound)
    width = next(g for g in spec.groups if g.within == experts.key)
    e_key, w_key = experts.key, width.key
    base = spec.shape(model_config)
    plain = dataclasses.replace(pruning_config, target_params=None, target_active_params=None)
    fixed = dict(plain.target_sizes(model_config))
    fixed["num_hidden_layers"] = pruning_config.num_hidden_layers or base["num_hidden_layers"] - len(
        pruning_config.layers_to_drop or []
    )
    low_e = base[experts.lower_bound]
    e_nodes = (low_e, base[e_key]) if low_e < base[e_key] else (low_e - 1 or 1, low_e)
    w_nodes = (max(1, base[w_key] // 2), base[w_key]) if base[w_key] > 1 else (1, 2)

    def bilinear(count) -> callable:
        table = {(e, w): count(model_config, {**fixed, e_key: e, w_key: w}) for e in e_nodes for w in w_nodes}
        (e0, e1), (w0, w1) = e_nodes, w_nodes

        def at(e, w):
            a, b = (e - e0) / (e1 - e0), (w - w0) / (w1 - w0)
            return (
                table[e0, w0] * (1 - a) * (1 - b)
                + table[e1, w0] * a * (1 - b)
                + table[e0, w1] * (1 - a) * b
                + table[e1, w1] * a * b
            )

        return at

    sizes = {}
    n_experts, n_width = fixed[e_key], fixed[w_key]
    if pruning_config.target_active_params is not None:
        active = bilinear(count_active_parameters)
        step = effective_multiple(base[w_key], pruning_config.width_multiple)
        options = np.arange(step, base[w_key] + 1, step)
        values = np.array([active(n_experts, w) for w in options])
        check_budget("target_active_params", pruning_config.target_active_params, values.min(), values.max())
        n_width = int(options[np.argmin(np.abs(values - pruning_config.target_active_params))])
        sizes[w_key] = n_width
    if pruning_config.target_params is not None:
        total = bilinear(count_parameters)
        options = np.arange(low_e, base[e_key] + 1)
        if experts.selection == "gqa":  # kept per routing group (Nemotron-H's n_group): whole multiples of it
            options = options[options % base[experts.config_keys[1]] == 0]
        values = np.array([total(e, n_width) for e in options])
        check_budget("target_params", pruning_config.target_params, values.min(), values.max())
        n_experts = int(options[np.argmin(np.abs(values - pruning_config.target_params))])
        sizes[e_key] = n_experts
    for name, target, count in (
        ("target_params", pruning_config.target_params, count_parameters),
        ("target_active_params", pruning_config.target_active_params, count_active_parameters),
    ):
        if target is not None:
            exact = count(model_config, {**fixed, **sizes})
            if abs(exact - target) > tolerance * target:
                logger.warning("%s=%s: the closest shape has %s (%.1f%% off)", name, f"{target:,}", f"{exact:,}",
                               100 * (exact - target) / target)  # fmt: skip
    return dataclasses.replace(plain, **sizes)
