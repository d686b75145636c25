"""The search space: shapes that meet a budget, Minitron's practical shape, and a covering choice of candidates."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from hf_minitron.search.cost import (
    SHAPE_KEYS,
    cost_model,
    count_parameters,
    flops_per_token,
    kv_cache_bytes_per_token,
    shape_of,
)

logger = logging.getLogger(__name__)

FAMILIES = ("width", "depth", "mixed")


@dataclass(frozen=True)
class Candidate:
    """
    One pruned shape and what it costs.

    Args:
        hidden_size, intermediate_size, num_attention_heads, num_key_value_heads, num_hidden_layers (`int`):
            The shape, named like the transformers config keys.
        params (`int`): Exact parameter count of that shape (embeddings and `lm_head` included, tied once).
        family (`str`): `"width"` (all layers kept), `"depth"` (only layers dropped) or `"mixed"`.
        flops_per_token (`int`): Forward FLOPs per token at the search's `seq_len`.
        kv_cache_bytes_per_token (`float`): KV-cache bytes per token at the search's `seq_len` (16-bit cache).
    """

    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    num_hidden_layers: int
    params: int
    family: str
    flops_per_token: int
    kv_cache_bytes_per_token: float

    @property
    def shape(self) -> dict[str, int]:
        return {key: getattr(self, key) for key in SHAPE_KEYS}

    @property
    def name(self) -> str:
        return (
            f"h{self.hidden_size}-mlp{self.intermediate_size}-q{self.num_attention_heads}"
            f"-kv{self.num_key_value_heads}-L{self.num_hidden_layers}"
        )

    def to_pruning_config(self, base=None):
        """A `PruningConfig` with this shape; other settings (importance, aggregation, ...) copied from `base`."""
        from hf_minitron.config import PruningConfig

        settings = base.to_dict() if base is not None else {}
        settings.update(self.shape, target_params=None, layers_to_drop=None)
        return PruningConfig(**settings)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "name": self.name}

    @classmethod
    def from_shape(cls, model_config, shape: dict[str, int | None], seq_len: int = 4096) -> Candidate:
        """The candidate for `shape` (None or missing = keep) of the model with `model_config`, costs exact."""
        base = shape_of(model_config)
        full = {key: int(shape.get(key) or base[key]) for key in SHAPE_KEYS}
        return cls(
            **full,
            params=count_parameters(model_config, full),
            family=_family(full, base),
            flops_per_token=flops_per_token(model_config, seq_len, full),
            kv_cache_bytes_per_token=kv_cache_bytes_per_token(model_config, seq_len, shape=full),
        )


def effective_multiple(size: int, multiple: int) -> int:
    """The step for a width of `size`: `multiple`, or for small models the largest power of two that still
    leaves at least 8 steps (64 for a hidden size of 4096; 8 for a tiny model's 64)."""
    step = max(1, int(multiple))
    while step > 1 and size < 8 * step:
        step //= 2
    return step


def _width_values(size: int, multiple: int) -> np.ndarray:
    step = effective_multiple(size, multiple)
    values = np.arange(step, size + 1, step)
    return values if values.size and values[-1] == size else np.append(values, size)


def _head_options(n_q: int, n_kv: int, prune_kv: bool) -> list[tuple[int, int]]:
    """(query heads, KV heads) pairs in whole GQA groups: fewer query heads per group, and (MHA models, or
    when asked) fewer KV groups with their query heads."""
    per_group = n_q // n_kv
    kv_values = range(1, n_kv + 1) if (prune_kv or per_group == 1) else [n_kv]
    return [(kv * g, kv) for kv in kv_values for g in range(1, per_group + 1)]


def _check_budget(name: str, target, smallest, largest, unit: str = "") -> None:
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


def _family(shape: dict[str, int], base: dict[str, int]) -> str:
    narrower = any(shape[k] < base[k] for k in SHAPE_KEYS[:4])
    shallower = shape["num_hidden_layers"] < base["num_hidden_layers"]
    return "mixed" if narrower and shallower else ("depth" if shallower else "width")


def resolve_target_params(model_config, pruning_config, tolerance: float = 0.05):
    """Minitron's practical shape for `pruning_config.target_params`: hidden and MLP sizes shrunk by a common
    factor (in multiples of `width_multiple`), heads and layers kept (or as the config sets them).

    Returns a copy of `pruning_config` with explicit `hidden_size` and `intermediate_size` and
    `target_params=None`. Sizes the config already sets are kept. Raises `ValueError` when no shape can meet
    the budget; logs a warning when the closest shape is outside `tolerance`.
    """
    target = pruning_config.target_params
    if target is None:
        return pruning_config
    base = shape_of(model_config)
    n_q, n_kv = pruning_config.resolve_heads(model_config)
    fixed = {
        "num_attention_heads": n_q,
        "num_key_value_heads": n_kv,
        "num_hidden_layers": pruning_config.num_hidden_layers
        or base["num_hidden_layers"] - len(pruning_config.layers_to_drop or []),
    }
    model = cost_model(model_config)
    # One common factor f for hidden and MLP, each rounded to its own multiple; scanning f finely also yields
    # the pairs where one size has rounded up and the other down, so the budget is met as closely as possible.
    factors = np.linspace(0.0, 1.0, 4001)[1:]
    sizes = []
    for key in ("hidden_size", "intermediate_size"):
        step = effective_multiple(base[key], pruning_config.width_multiple)
        if getattr(pruning_config, key):
            sizes.append(np.full(factors.shape, getattr(pruning_config, key)))
        else:
            sizes.append(np.clip(np.round(base[key] * factors / step) * step, step, base[key]))
    hidden, mlp = np.unique(np.stack(sizes, axis=1), axis=0).T
    counts = model.params(
        hidden, mlp, fixed["num_attention_heads"], fixed["num_key_value_heads"], fixed["num_hidden_layers"]
    )
    largest = count_parameters(model_config)
    _check_budget("target_params", target, float(np.min(counts)), largest)
    best = int(np.argmin(np.abs(counts - target)))
    shape = {"hidden_size": int(hidden[best]), "intermediate_size": int(mlp[best]), **fixed}
    exact = count_parameters(model_config, shape)
    if abs(exact - target) > tolerance * target:
        logger.warning(
            "target_params=%s: the closest common-factor shape has %s parameters (%.1f%% off); "
            "set num_hidden_layers or heads too, or use search_architectures to explore other shapes",
            f"{target:,}",
            f"{exact:,}",
            100 * (exact - target) / target,
        )
    logger.debug(
        "target_params=%s resolved to hidden_size=%d, intermediate_size=%d (%s parameters); "
        "hf_minitron.search_architectures ranks the alternatives (depth, heads, mixed) after short retraining",
        f"{target:,}",
        shape["hidden_size"],
        shape["intermediate_size"],
        f"{exact:,}",
    )
    return dataclasses.replace(
        pruning_config,
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"],
        target_params=None,
    )


def _farthest_points(points: np.ndarray, k: int, first: int, rng: np.random.Generator) -> list[int]:
    """Greedy farthest-point sampling (ties broken by `rng`): `k` indices that cover `points`."""
    chosen = [first]
    distance = np.linalg.norm(points - points[first], axis=1)
    jitter = rng.random(len(points)) * 1e-9
    while len(chosen) < min(k, len(points)):
        nxt = int(np.argmax(distance + jitter))
        if distance[nxt] <= 0:
            break
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1))
    return chosen


def enumerate_candidates(
    model_config,
    target_params: int | None = None,
    *,
    target_flops_per_token: float | None = None,
    target_kv_cache_bytes_per_token: float | None = None,
    seq_len: int = 4096,
    tolerance: float = 0.05,
    width_multiple: int = 64,
    max_candidates: int | None = 20,
    families: tuple[str, ...] = FAMILIES,
    mlp_ratio_range: tuple[float, float] = (0.5, 1.5),
    prune_kv_heads: bool | None = None,
    seed: int = 0,
) -> list[Candidate]:
    """Shapes within `tolerance` of every given budget, at most `max_candidates` of them chosen to cover the space.

    Axes (Minitron's search space): hidden and MLP sizes in multiples of `width_multiple` (a smaller power of
    two for small models, see `effective_multiple`), query heads in whole GQA groups (the same number per
    KV group; KV groups are kept unless `prune_kv_heads`, which defaults to True only for a KV-cache budget),
    and the number of layers. The MLP expansion ratio (MLP / hidden) stays within `mlp_ratio_range` times the
    original one. Budgets: `target_params` (exact count), `target_flops_per_token` and
    `target_kv_cache_bytes_per_token` (at `seq_len`, see `flops_per_token` and `kv_cache_bytes_per_token`).

    The choice always includes Minitron's practical shape (`resolve_target_params`) when it meets the budgets,
    then splits the slots over the width-only, depth-only and mixed families and picks in each the shapes
    farthest apart in relative (hidden, MLP, heads, layers); `seed` breaks ties, so the result is deterministic.
    Each returned candidate's cost is recomputed exactly from its config. Raises `ValueError` when no shape
    can meet the budgets.
    """
    budgets = {
        "target_params": target_params,
        "target_flops_per_token": target_flops_per_token,
        "target_kv_cache_bytes_per_token": target_kv_cache_bytes_per_token,
    }
    if all(v is None for v in budgets.values()):
        raise ValueError(
            "enumerate_candidates needs a budget: target_params, target_flops_per_token or "
            "target_kv_cache_bytes_per_token"
        )
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance={tolerance} is invalid: allowed 0 <= tolerance < 1")
    unknown = set(families) - set(FAMILIES)
    if unknown or not families:
        raise ValueError(f"families={families!r} is invalid: allowed a non-empty subset of {FAMILIES}")
    base = shape_of(model_config)
    if prune_kv_heads is None:
        prune_kv_heads = target_kv_cache_bytes_per_token is not None
    model = cost_model(model_config)

    hidden = _width_values(base["hidden_size"], width_multiple)
    mlp = _width_values(base["intermediate_size"], width_multiple)
    heads = np.array(_head_options(base["num_attention_heads"], base["num_key_value_heads"], prune_kv_heads))
    layers = np.arange(1, base["num_hidden_layers"] + 1)
    hid_g, mlp_g, head_g, lay_g = np.meshgrid(hidden, mlp, np.arange(len(heads)), layers, indexing="ij")
    hid_g, mlp_g, head_g, lay_g = hid_g.ravel(), mlp_g.ravel(), head_g.ravel(), lay_g.ravel()
    q_g, kv_g = heads[head_g, 0], heads[head_g, 1]

    costs = {
        "target_params": model.params(hid_g, mlp_g, q_g, kv_g, lay_g),
        "target_flops_per_token": model.flops(hid_g, mlp_g, q_g, kv_g, lay_g, seq_len),
        "target_kv_cache_bytes_per_token": model.kv_bytes(kv_g, lay_g, seq_len),
    }
    full = dict(
        target_params=count_parameters(model_config),
        target_flops_per_token=flops_per_token(model_config, seq_len),
        target_kv_cache_bytes_per_token=kv_cache_bytes_per_token(model_config, seq_len),
    )
    ok = np.ones(hid_g.shape, dtype=bool)
    for name, target in budgets.items():
        if target is None:
            continue
        _check_budget(name, target, float(costs[name].min()), full[name])
        ok &= np.abs(costs[name] - target) <= tolerance * target
    ratio = (mlp_g / hid_g) / (base["intermediate_size"] / base["hidden_size"])
    ok &= (ratio >= mlp_ratio_range[0] - 1e-9) & (ratio <= mlp_ratio_range[1] + 1e-9)
    narrower = (
        (hid_g < base["hidden_size"])
        | (mlp_g < base["intermediate_size"])
        | (q_g < base["num_attention_heads"])
    )
    narrower |= kv_g < base["num_key_value_heads"]
    shallower = lay_g < base["num_hidden_layers"]
    family = np.where(narrower & shallower, 2, np.where(shallower, 1, 0))
    ok &= np.isin(family, [FAMILIES.index(f) for f in families])
    index = np.flatnonzero(ok)
    if index.size == 0:
        raise ValueError(
            f"no shape meets {', '.join(f'{k}={v:,}' for k, v in budgets.items() if v is not None)} within "
            f"{tolerance:.0%} (families {families}, width multiple {width_multiple}, MLP ratio range "
            f"{mlp_ratio_range}); widen the tolerance or the search space"
        )

    rng = np.random.default_rng(seed)
    points = np.stack(
        [
            hid_g / base["hidden_size"],
            mlp_g / base["intermediate_size"],
            q_g / base["num_attention_heads"],
            kv_g / base["num_key_value_heads"],
            lay_g / base["num_hidden_layers"],
        ],
        axis=1,
    )
    primary = next(name for name, v in budgets.items() if v is not None)
    closeness = np.abs(costs[primary] - budgets[primary])

    # Minitron's practical shape first (common factor on hidden and MLP, heads and layers kept).
    practical = None
    if target_params is not None and "width" in families:
        from hf_minitron.config import PruningConfig

        resolved = resolve_target_params(
            model_config, PruningConfig(target_params=target_params, width_multiple=width_multiple), tolerance
        )
        match = np.flatnonzero(
            ok
            & (hid_g == resolved.hidden_size)
            & (mlp_g == resolved.intermediate_size)
            & (q_g == base["num_attention_heads"])
            & (kv_g == base["num_key_value_heads"])
            & (lay_g == base["num_hidden_layers"])
        )
        practical = int(match[0]) if match.size else None

    per_family = {f: index[family[index] == FAMILIES.index(f)] for f in families}
    per_family = {f: idx for f, idx in per_family.items() if idx.size}
    limit = max_candidates if max_candidates is not None else int(index.size)
    quotas = {f: 0 for f in per_family}
    while sum(quotas.values()) < min(limit, index.size):  # round-robin over the families with shapes left
        for f in per_family:
            if quotas[f] < per_family[f].size and sum(quotas.values()) < limit:
                quotas[f] += 1

    chosen: list[int] = []
    for f, idx in per_family.items():
        if f == "width" and practical is not None:
            first = int(np.flatnonzero(idx == practical)[0])
        else:
            first = int(np.argmin(closeness[idx]))
        chosen += [int(idx[i]) for i in _farthest_points(points[idx], quotas[f], first, rng)]

    candidates = []
    for i in chosen:
        shape = {
            "hidden_size": int(hid_g[i]),
            "intermediate_size": int(mlp_g[i]),
            "num_attention_heads": int(q_g[i]),
            "num_key_value_heads": int(kv_g[i]),
            "num_hidden_layers": int(lay_g[i]),
        }
        candidates.append(Candidate.from_shape(model_config, shape, seq_len))
    if target_params is not None:  # the closed form is exact for supported models; keep only what is exact
        candidates = [c for c in candidates if abs(c.params - target_params) <= tolerance * target_params]
    return candidates
