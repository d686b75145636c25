"""The search space: shapes that meet a budget, Minitron's practical shape, and a covering choice of candidates."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hf_minitron.architectures import get_spec
from hf_minitron.architectures.spec import text_config
from hf_minitron.counting import (
    cost_model,
    count_active_parameters,
    count_parameters,
    flops_per_token,
    kv_cache_bytes_per_token,
    shape_of,
)
from hf_minitron.pruning.budget import accepted, check_budget, effective_multiple, resolve_target_params

logger = logging.getLogger(__name__)

FAMILIES = ("width", "depth", "mixed")
__all__ = ["FAMILIES", "Candidate", "effective_multiple", "enumerate_candidates", "resolve_target_params"]


def _abbreviation(key: str) -> str:
    """A short name part for a config key: initials of its words (`intermediate_size` -> `is`)."""
    return "".join(word[0] for word in key.split("_"))


@dataclass(frozen=True)
class Candidate:
    """
    One pruned shape and what it costs. Its sizes read as attributes named like the config keys
    (`candidate.hidden_size`).

    Args:
        sizes (`dict[str, int]`): The shape, keyed like the transformers config (every declared group's keys and
            `num_hidden_layers`).
        params (`int`): Exact parameter count of that shape (embeddings and `lm_head` included, tied once).
        family (`str`): `"width"` (all layers kept), `"depth"` (only layers dropped) or `"mixed"`.
        flops_per_token (`int`): Forward FLOPs per token at the search's `seq_len`.
        kv_cache_bytes_per_token (`float`): KV-cache bytes per token at the search's `seq_len` (16-bit cache).
        active_params (`int`, *optional*): Parameters a token touches (fewer than `params` in a
            mixture-of-experts model: a token runs `num_experts_per_tok` experts).
        layers_to_drop (`tuple[int, ...]`, *optional*): Which source layers a shallower shape drops, when the
            model's layers differ (dense and MoE layers, a hybrid's Mamba and attention layers) so the count
            depends on it; the pruning config then names them. None: all layers cost the same (the importance
            scores choose at pruning time).
    """

    sizes: dict[str, int] = field(hash=False)
    params: int
    family: str
    flops_per_token: int
    kv_cache_bytes_per_token: float
    active_params: int | None = None
    layers_to_drop: tuple[int, ...] | None = None

    def __getattr__(self, name: str):
        sizes = self.__dict__.get("sizes", {})
        if name in sizes:
            return sizes[name]
        raise AttributeError(name)

    @property
    def shape(self) -> dict[str, int]:
        return dict(self.sizes)

    @property
    def name(self) -> str:
        return "-".join(f"{_abbreviation(k)}{v}" for k, v in self.sizes.items())

    def to_pruning_config(self, base=None):
        """A `PruningConfig` with this shape; other settings (importance, aggregation, ...) copied from `base`."""
        import dataclasses

        from hf_minitron.config import PruningConfig

        fields = {f.name for f in dataclasses.fields(PruningConfig)}
        settings = base.to_dict() if base is not None else {}
        sizes = {
            k: v for k, v in self.sizes.items() if k in fields
        }  # kept-whole keys (Mamba n_groups) have none
        settings.update(sizes, target_params=None, target_active_params=None, layers_to_drop=None)
        if self.layers_to_drop:
            settings["layers_to_drop"] = list(self.layers_to_drop)
        return PruningConfig(**settings)

    def to_dict(self) -> dict:
        return {
            **self.sizes,
            "params": self.params,
            "family": self.family,
            "flops_per_token": self.flops_per_token,
            "kv_cache_bytes_per_token": self.kv_cache_bytes_per_token,
            "active_params": self.active_params,
            "layers_to_drop": list(self.layers_to_drop) if self.layers_to_drop else None,
            "name": self.name,
        }

    @classmethod
    def from_shape(
        cls,
        model_config,
        shape: dict[str, int | None],
        seq_len: int = 4096,
        kept: Callable[[int], Sequence[int]] | None = None,
    ) -> Candidate:
        """The candidate for `shape` (None or missing = keep) of the model with `model_config`, costs exact.
        `kept(depth)` names the source layers a depth keeps (default: the first ones); it is recorded only when
        the model's layers differ in cost."""
        base = shape_of(model_config)
        full = {key: int(shape.get(key) or base[key]) for key in base}
        n_layers, depth = base["num_hidden_layers"], full["num_hidden_layers"]
        kept_layers = sorted(kept(depth)) if kept is not None else list(range(depth))
        dropped = None
        if cost_model(model_config).layers_differ and depth < n_layers:
            dropped = tuple(i for i in range(n_layers) if i not in set(kept_layers))
        else:
            kept_layers = None
        return cls(
            sizes=full,
            params=count_parameters(model_config, full, kept_layers),
            family=_family(full, base),
            flops_per_token=flops_per_token(model_config, seq_len, full, kept_layers),
            kv_cache_bytes_per_token=kv_cache_bytes_per_token(
                model_config, seq_len, shape=full, kept_layers=kept_layers
            ),
            active_params=count_active_parameters(model_config, full, kept_layers),
            layers_to_drop=dropped,
        )


def _width_values(size: int, multiple: int) -> np.ndarray:
    step = effective_multiple(size, multiple)
    values = np.arange(step, size + 1, step)
    return values if values.size and values[-1] == size else np.append(values, size)


def _gqa_options(n_q: int, n_kv: int, prune_kv: bool) -> list[tuple[int, int]]:
    """(query heads, KV heads) pairs in whole GQA groups: fewer query heads per group, and (MHA models, or
    when asked) fewer KV groups with their query heads."""
    per_group = n_q // n_kv
    kv_values = range(1, n_kv + 1) if (prune_kv or per_group == 1) else [n_kv]
    return [(kv * g, kv) for kv in kv_values for g in range(1, per_group + 1)]


def _axis_options(group, base: dict, width_multiple: int, prune_kv: bool, lowest: int = 1) -> np.ndarray:
    """Every value tuple of a group's config keys the search may pick, as rows (at least `lowest`)."""
    if group.search_step == "gqa":
        return np.array(_gqa_options(*(base[k] for k in group.config_keys), prune_kv))
    columns = []
    for k in group.config_keys:
        values = _width_values(base[k], width_multiple)
        if lowest > 1:
            values = np.union1d(values[values >= lowest], [lowest] if lowest <= base[k] else [])
        columns.append(values.astype(np.int64))
    return np.array(np.meshgrid(*columns, indexing="ij")).reshape(len(columns), -1).T


MAX_GRID_ROWS = 4_000_000  # shapes scored at once; wider models get a coarser step on their widest axes


def _grid_options(
    spec, model_config, base: dict, width_multiple: int, prune_kv: bool, used: set[str]
) -> list:
    """The options of every group (a single row, the current sizes, for a group no count depends on: a dense
    MLP width of a MoE model without dense layers), steps doubled on the widest width axes until the grid of all
    combinations x depths has at most `MAX_GRID_ROWS` rows."""
    text = text_config(model_config)
    steps = {g.name: width_multiple for g in spec.groups}
    exhausted: set[str] = set()  # axes a larger multiple no longer thins (see `effective_multiple`)
    while True:
        options = []
        for g in spec.groups:
            if not used & set(g.config_keys):
                options.append(np.array([[base[k] for k in g.config_keys]]))
                continue
            lowest = int(getattr(text, g.lower_bound)) if g.lower_bound else 1
            options.append(_axis_options(g, base, steps[g.name], prune_kv, lowest))
        rows = base["num_hidden_layers"] * int(np.prod([len(o) for o in options]))
        widest = max(
            (i for i, g in enumerate(spec.groups) if g.search_step == "width" and g.name not in exhausted),
            key=lambda i: len(options[i]),
            default=None,
        )
        if rows <= MAX_GRID_ROWS or widest is None:
            return options
        name, before = spec.groups[widest].name, len(options[widest])
        steps[name] *= 2
        coarser = _axis_options(spec.groups[widest], base, steps[name], prune_kv)
        if len(coarser) >= before or steps[name] > max(base[k] for k in spec.groups[widest].config_keys):
            exhausted.add(name)
        logger.info("search grid of %s shapes: %s stepped in multiples of %d", f"{rows:,}", name, steps[name])


def _family(shape: dict[str, int], base: dict[str, int]) -> str:
    narrower = any(shape[k] < base[k] for k in base if k != "num_hidden_layers")
    shallower = shape["num_hidden_layers"] < base["num_hidden_layers"]
    return "mixed" if narrower and shallower else ("depth" if shallower else "width")


def _farthest_points(points: np.ndarray, k: int, first: int, rng: np.random.Generator, valid) -> list[int]:
    """Greedy farthest-point sampling (ties broken by `rng`): up to `k` indices that cover `points`, skipping
    those for which `valid(i)` is false (starting from `first`, or the closest valid point after it)."""
    jitter = rng.random(len(points)) * 1e-9
    excluded = np.zeros(len(points), dtype=bool)
    chosen: list[int] = []
    distance = None
    candidate = first
    while len(chosen) < min(k, len(points)):
        if candidate is None:
            break
        if not valid(candidate):
            excluded[candidate] = True
        else:
            chosen.append(candidate)
            d = np.linalg.norm(points - points[candidate], axis=1)
            distance = d if distance is None else np.minimum(distance, d)
        if distance is None:  # no valid start yet: the next point in order
            rest = np.flatnonzero(~excluded)
            candidate = int(rest[0]) if rest.size else None
            continue
        score = np.where(excluded, -np.inf, distance + jitter)
        nxt = int(np.argmax(score))
        candidate = nxt if np.isfinite(score[nxt]) and distance[nxt] > 0 else None
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
    target_active_params: int | None = None,
    kept: Callable[[int], Sequence[int]] | None = None,
) -> list[Candidate]:
    """Shapes within `tolerance` of every given budget, at most `max_candidates` of them chosen to cover the space.

    Axes (Minitron's search space): hidden and MLP sizes in multiples of `width_multiple` (a smaller power of
    two for small models, see `effective_multiple`), query heads in whole GQA groups (the same number per
    KV group; KV groups are kept unless `prune_kv_heads`, which defaults to True only for a KV-cache budget),
    and the number of layers. The MLP expansion ratio (MLP / hidden) stays within `mlp_ratio_range` times the
    original one. Mixture-of-experts models add the experts per layer (at least `num_experts_per_tok`) and the
    expert width; hybrids their Mamba / linear-attention heads. Budgets: `target_params` (exact count),
    `target_active_params` (parameters a token touches), `target_flops_per_token` and
    `target_kv_cache_bytes_per_token` (at `seq_len`, see `flops_per_token` and `kv_cache_bytes_per_token`).
    When layers differ in cost (dense and MoE layers, a hybrid's kinds), `kept(depth)` names the source layers a
    depth keeps (`search_architectures` passes the importance scores' choice; default: the first ones) and each
    candidate records the layers it drops.

    The choice always includes Minitron's practical shape (`resolve_target_params`) when it meets the budgets,
    then splits the slots over the width-only, depth-only and mixed families and picks in each the shapes
    farthest apart in relative (hidden, MLP, heads, layers); `seed` breaks ties, so the result is deterministic.
    Each returned candidate's cost is recomputed exactly from its config. Raises `ValueError` when no shape
    can meet the budgets.
    """
    budgets = {
        "target_params": target_params,
        "target_active_params": target_active_params,
        "target_flops_per_token": target_flops_per_token,
        "target_kv_cache_bytes_per_token": target_kv_cache_bytes_per_token,
    }
    if all(v is None for v in budgets.values()):
        raise ValueError(
            "enumerate_candidates needs a budget: target_params, target_active_params, target_flops_per_token "
            "or target_kv_cache_bytes_per_token"
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
    spec = get_spec(model_config)
    keys = list(base)

    # the grid: every combination of each group's options and every depth, one row per shape
    options = _grid_options(spec, model_config, base, width_multiple, prune_kv_heads, model.variables)
    options.append(np.arange(1, base["num_hidden_layers"] + 1)[:, None])
    index_grid = np.meshgrid(*(np.arange(len(o)) for o in options), indexing="ij")
    columns = np.concatenate([o[g.ravel()] for o, g in zip(options, index_grid)], axis=1)
    order = [k for g in spec.groups for k in g.config_keys] + ["num_hidden_layers"]
    grid = {k: columns[:, order.index(k)] for k in keys}
    n_rows = columns.shape[0]

    costs = {
        "target_params": model.params(grid, kept),
        "target_active_params": model.active_params(grid, kept) if target_active_params else None,
        "target_flops_per_token": model.flops(grid, seq_len, kept),
        "target_kv_cache_bytes_per_token": model.kv_bytes(grid, seq_len, kept=kept),
    }
    full = dict(
        target_params=count_parameters(model_config),
        target_active_params=count_active_parameters(model_config),
        target_flops_per_token=flops_per_token(model_config, seq_len),
        target_kv_cache_bytes_per_token=kv_cache_bytes_per_token(model_config, seq_len),
    )
    ok = np.ones(n_rows, dtype=bool)
    for name, target in budgets.items():
        if target is None:
            continue
        cost = np.broadcast_to(costs[name], (n_rows,))
        check_budget(name, target, float(cost.min()), full[name])
        ok &= np.abs(cost - target) <= tolerance * target
    for group in spec.groups:
        if group.search_ratio_of:
            ratio = (grid[group.key] / grid[group.search_ratio_of]) / (
                base[group.key] / base[group.search_ratio_of]
            )
            ok &= (ratio >= mlp_ratio_range[0] - 1e-9) & (ratio <= mlp_ratio_range[1] + 1e-9)
    narrower = np.zeros(n_rows, dtype=bool)
    for k in keys[:-1] if keys[-1] == "num_hidden_layers" else keys:
        if k != "num_hidden_layers":
            narrower |= grid[k] < base[k]
    shallower = grid["num_hidden_layers"] < base["num_hidden_layers"]
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
    points = np.stack([grid[k] / base[k] for k in keys], axis=1)
    primary = next(name for name, v in budgets.items() if v is not None)
    closeness = np.abs(np.broadcast_to(costs[primary], (n_rows,)) - budgets[primary])

    def shape_at(i: int) -> dict[str, int]:
        return {k: int(grid[k][i]) for k in keys}

    # only shapes the model's config class accepts (e.g. Llama's hidden % heads == 0), checked lazily
    valid: dict[int, bool] = {}

    def is_valid(i: int) -> bool:
        if i not in valid:
            valid[i] = accepted(model_config, shape_at(i))
        return valid[i]

    # Minitron's practical shape first (common factor on the widths, heads and layers kept).
    practical = None
    if (target_params is not None or target_active_params is not None) and "width" in families:
        from hf_minitron.config import PruningConfig

        budget = PruningConfig(
            target_params=target_params,
            target_active_params=target_active_params,
            width_multiple=width_multiple,
        )
        try:
            resolved = resolve_target_params(model_config, budget, tolerance)
        except ValueError:  # e.g. both budgets on a dense model: no practical shape, the grid still has some
            resolved = budget
        wanted = {k: getattr(resolved, k, None) or base[k] for k in keys}
        match = ok.copy()
        for k in keys:
            match &= grid[k] == wanted[k]
        match = np.flatnonzero(match)
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
        if quotas[f] == 0:
            continue
        if f == "width" and practical is not None:
            first = int(np.flatnonzero(idx == practical)[0])
        else:
            first = int(np.argmin(closeness[idx]))
        picked = [
            int(idx[i])
            for i in _farthest_points(
                points[idx], quotas[f], first, rng, lambda i, idx=idx: is_valid(int(idx[i]))
            )
        ]
        chosen += picked

    candidates = [Candidate.from_shape(model_config, shape_at(i), seq_len, kept) for i in chosen]
    # the closed form is exact for supported models; keep only what the exact counts confirm
    if target_params is not None:
        candidates = [c for c in candidates if abs(c.params - target_params) <= tolerance * target_params]
    if target_active_params is not None:
        candidates = [
            c
            for c in candidates
            if abs(c.active_params - target_active_params) <= tolerance * target_active_params
        ]
    return candidates
