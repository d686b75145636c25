"""Prunable dimensions as data: which tensor slices move together, where importance is read, what is allowed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# Rows per unit along a tensor dim: a number, or the name of a config attribute (e.g. "head_dim").
Rows = int | str


@dataclass(frozen=True)
class Segment:
    """
    One block of a tensor dim: `count(index) x rows` consecutive entries, unit after unit.

    Args:
        index (`str`, defaults to `"unit"`): Which kept-index set selects its units (`"unit"` for neurons and
            channels; `"query"` / `"kv"` for attention heads and their KV groups).
        rows (`int | str`, defaults to 1): Entries per unit (`"head_dim"` for a head's rows).
        magnitude (`bool`, defaults to `True`): Counted by the magnitude criterion (q/k rows are not: a head's
            weight norm is its value path).
    """

    index: str = "unit"
    rows: Rows = 1
    magnitude: bool = True


@dataclass(frozen=True)
class TensorSlice:
    """
    A parameter that shrinks with a dimension group.

    Args:
        path (`str`): Parameter path, relative to one decoder layer for per-layer groups, else to the model;
            `*` stands for every layer index.
        dim (`int`): The tensor dim the units index.
        segments (`tuple[Segment, ...]`): The layout of that dim; fused tensors have several
            (`qkv_proj` rows = [q | k | v], `gate_up_proj` rows = [gate | up]).
        role (`str`, defaults to `"out"`): `"out"` when the tensor produces the units (rows of a projection
            into them, norms over them), `"in"` when it reads them; the magnitude criterion multiplies the two.
        rms_width (`bool | str`, defaults to `False`): A norm whose statistic spans this dim (RMSNorm over the hidden
            size, OLMo 2's full-width q/k norms): its gain is rescaled by sqrt(old / new width) so the kept entries
            keep their values when the pruned ones carried nothing. `"kv"`: the statistic spans the entries of one
            unit of the `"kv"` index set (a Mamba-2 gated norm per SSM group), so the widths are per kept group.
        optional (`bool`, defaults to `False`): Present in some layers only (the dense MLP of a mixture-of-experts
            model's dense layers, the experts of its sparse ones); missing elsewhere is not an error.
        block_dim (`int`, *optional*): The tensor is a stack of blocks (experts) along this dim and a group with
            `within` keeps different units in each block (`[E, 2I, H]` expert weights: dim 1, block_dim 0).
        layer_kinds (`tuple[str, ...]`, defaults to `()`): For a `*` path in a hybrid model: only the layers of
            these kinds (entries of the spec's layer pattern) have it; empty = every layer.
        grouped_by (`str`, *optional*): The dim is laid out block by block, one block per unit of this index set,
            each block holding its share of every segment in turn (Qwen3-Next's `in_proj_qkvz`: per key head
            [q | k | v of its value heads | z of its value heads]; a gated `q_proj`: per head [q | gate]); the
            units of the other index sets must nest in these blocks (value heads in key heads, GQA).
    """

    path: str
    dim: int = 0
    segments: tuple[Segment, ...] = (Segment(),)
    role: str = "out"
    rms_width: bool | str = False
    optional: bool = False
    block_dim: int | None = None
    layer_kinds: tuple[str, ...] = ()
    grouped_by: str | None = None


@dataclass(frozen=True)
class Observation:
    """
    Where the activation criterion reads a group's importance.

    Args:
        modules (`tuple[str, ...]`): Module paths (relative like the slices; `*` = every layer).
        at (`str`, defaults to `"input"`): `"input"` (forward pre-hook, first argument), `"output"`, or
            `"experts"` (inside a fused experts module's computation: per-expert routing statistics and each
            expert's intermediate activation over the tokens routed to it).
        rows (`int | str`, defaults to 1): Entries per unit; units of several entries score the L2 norm over them.
        optional (`bool`, defaults to `False`): The module exists in some layers only (their scores are 0).
    """

    modules: tuple[str, ...]
    at: str = "input"
    rows: Rows = 1
    optional: bool = False


@dataclass(frozen=True)
class DimensionGroup:
    """
    One prunable axis of a model: its config keys, its unit, every tensor slice that moves with it, where its
    importance is observed and how the kept units are chosen.

    Args:
        name (`str`): The key of its scores in `ImportanceScores` (`"neurons"`, `"heads"`, `"channels"`).
        config_keys (`tuple[str, ...]`): The config (and `PruningConfig`) fields that size it; the first one
            counts the scored units.
        unit (`str`): What one unit is, for messages and docs.
        scope (`str`): `"layer"` (ranked and cut in every layer, the same count everywhere) or `"model"` (one
            ranking for the whole model, like the embedding channels).
        slices (`tuple[TensorSlice, ...]`): What moves with it.
        observe (`Observation`): Where the activation criterion reads it.
        selection (`str`, defaults to `"top"`): `"top"` (best units) or `"gqa"` (whole KV groups, then the same
            number of query heads in each kept group).
        search_step (`str`, defaults to `"width"`): How the architecture search steps it: `"width"` (multiples of
            `width_multiple`) or `"gqa"` (whole query heads per group).
        search_ratio_of (`str`, *optional*): A config key whose ratio to this group's size the search keeps near
            the original one (the MLP expansion factor over `hidden_size`).
        within (`str`, *optional*): A config key counting blocks (`num_experts`) inside which units are ranked and
            kept separately (expert neurons): scores are `[layers, blocks, units]`, the same count in every block.
        lower_bound (`str`, *optional*): A config key the new size may not go below (`num_experts_per_tok`).
        layer_kinds (`tuple[str, ...]`, defaults to `()`): A per-layer group of a hybrid model lives only in the
            layers of these kinds (entries of the spec's layer pattern: Mamba heads in Mamba layers); empty =
            every layer. Its score rows for other layers are zeros and never used.
        module_attributes (`tuple[tuple[str, str, Callable], ...]`, defaults to `()`): Sizes a module caches from
            the config, as (module path relative to the layer, attribute, function of the pruned text config),
            rewritten after pruning in the layers this group lives in (a Mamba mixer's `conv_dim`).
    """

    name: str
    config_keys: tuple[str, ...]
    unit: str
    scope: str
    slices: tuple[TensorSlice, ...]
    observe: Observation
    selection: str = "top"
    search_step: str = "width"
    search_ratio_of: str | None = None
    within: str | None = None
    lower_bound: str | None = None
    layer_kinds: tuple[str, ...] = ()
    module_attributes: tuple[tuple[str, str, Callable], ...] = ()

    @property
    def key(self) -> str:
        """The config key that counts the scored units."""
        return self.config_keys[0]


def unit_shape(group: DimensionGroup, values: dict) -> tuple[int, ...]:
    """The shape of one layer's (or the model's) unit scores: `(units,)`, or `(blocks, units)` with `within`."""
    if group.within:
        return (values[group.within], values[group.key])
    return (values[group.key],)


def rows_of(rows: Rows, config) -> int:
    """Entries per unit: a number, or a config attribute (`head_dim` defaults to hidden / heads)."""
    if isinstance(rows, int):
        return rows
    value = getattr(config, rows, None)
    if rows == "head_dim" and not value:
        value = config.hidden_size // config.num_attention_heads
    return int(value)


def applies(layer_kinds: tuple[str, ...], kind: str | None) -> bool:
    """Whether a group or slice declared for `layer_kinds` (empty: every layer) lives in a layer of `kind`."""
    return not layer_kinds or kind in layer_kinds


def expand(
    path: str, num_layers: int, kinds: list[str] | None = None, only: tuple[str, ...] = ()
) -> list[str]:
    """A slice or observation path with `*` replaced by every layer index (with `kinds`, the kind of each layer,
    only the layers whose kind is in `only`, when `only` is not empty)."""
    if "*" not in path:
        return [path]
    return [path.replace("*", str(i)) for i in range(num_layers) if kinds is None or applies(only, kinds[i])]


def index_counts(group: DimensionGroup, values: dict[str, int]) -> dict[str, int]:
    """How many units each index set of a group has, given its config values."""
    if group.selection == "gqa":
        q_key, kv_key = group.config_keys
        return {"query": values[q_key], "kv": values[kv_key]}
    return {"unit": values[group.key]}


def top_sorted(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the `k` highest scores, in their original order (ties: lower index first)."""
    order = torch.sort(scores.float(), descending=True, stable=True).indices[:k]
    return order.sort().values


def select_heads(
    scores: torch.Tensor, n_kv: int, new_q: int, new_kv: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept query heads, kept KV groups): the best `new_kv` groups by summed head score, then the best
    `new_q // new_kv` query heads within each kept group; all in original order."""
    per_group = scores.reshape(n_kv, -1)
    groups = top_sorted(per_group.sum(1), new_kv)
    r, new_r = per_group.shape[1], new_q // new_kv
    heads = torch.cat([g * r + top_sorted(per_group[g], new_r) for g in groups.tolist()])
    return heads, groups


def select(group: DimensionGroup, scores: torch.Tensor, old: dict, new: dict) -> dict[str, torch.Tensor]:
    """The kept indices of every index set of `group`, from one layer's (or the model's) unit scores."""
    if group.selection == "gqa":
        q_key, kv_key = group.config_keys
        heads, groups = select_heads(scores, old[kv_key], new[q_key], new[kv_key])
        return {"query": heads, "kv": groups}
    if group.within:  # one kept set per block (expert): [blocks, kept]
        return {"unit": torch.stack([top_sorted(row, new[group.key]) for row in scores])}
    return {"unit": top_sorted(scores, new[group.key])}


def to_units(group: DimensionGroup, index: str, per_index: torch.Tensor, values: dict) -> torch.Tensor:
    """Scores of an index set mapped onto the scored units (a KV group's score is shared by its query heads)."""
    if group.selection == "gqa" and index == "kv":
        q_key, kv_key = group.config_keys
        ratio = values[q_key] // values[kv_key]
        return per_index.repeat_interleave(ratio) / ratio
    return per_index


def grouped_positions(segments: tuple[Segment, ...], by: str, counts: dict, config) -> torch.Tensor:
    """For a dim laid out block by block (`TensorSlice.grouped_by`): the position of each entry of the plain
    segment-after-segment layout in the blocked one."""
    blocks = counts[by]
    shares = [(counts[seg.index] // blocks, rows_of(seg.rows, config)) for seg in segments]
    block_size = sum(n * rows for n, rows in shares)
    parts, inner = [], 0
    for n, rows in shares:
        unit = torch.arange(n * blocks)
        start = (unit // n) * block_size + inner + (unit % n) * rows
        parts.append((start.unsqueeze(-1) + torch.arange(rows)).flatten())
        inner += n * rows
    return torch.cat(parts)


def entries(
    segments: tuple[Segment, ...],
    kept: dict[str, torch.Tensor],
    counts: dict,
    config,
    grouped_by: str | None = None,
) -> torch.Tensor:
    """The kept positions along a sliced dim: each segment's kept units expanded to their rows, offset by the
    sizes of the segments before it (`[blocks, positions]` when the units differ per block); for a dim laid out
    block by block (`grouped_by`), the same entries at their blocked positions, in order."""
    parts, offset = [], 0
    for seg in segments:
        rows = rows_of(seg.rows, config)
        units = kept[seg.index]
        parts.append(offset + (units.unsqueeze(-1) * rows + torch.arange(rows)).flatten(-2))
        offset += counts[seg.index] * rows
    flat = torch.cat(parts, dim=-1)
    if grouped_by is None:
        return flat
    return grouped_positions(segments, grouped_by, counts, config)[flat].sort(dim=-1).values


def per_unit(
    values: torch.Tensor,
    segments: tuple[Segment, ...],
    counts: dict,
    config,
    magnitude_only: bool = False,
    grouped_by: str | None = None,
) -> dict[str, torch.Tensor]:
    """Sum a per-entry vector (its last dim; leading dims are blocks) along a sliced dim to per-unit sums for
    each index set it holds (a dim laid out block by block, `grouped_by`, is first put segment after segment)."""
    if grouped_by is not None:
        values = values[..., grouped_positions(segments, grouped_by, counts, config).to(values.device)]
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for seg in segments:
        rows, n = rows_of(seg.rows, config), counts[seg.index]
        part = values[..., offset : offset + n * rows]
        offset += n * rows
        if magnitude_only and not seg.magnitude:
            continue
        summed = part.reshape(*part.shape[:-1], n, rows).sum(-1)
        out[seg.index] = out[seg.index] + summed if seg.index in out else summed
    if offset != values.shape[-1]:
        raise ValueError(f"a sliced dim has {values.shape[-1]} entries but its segments describe {offset}")
    return out


def _fail(name: str, value, allowed: str) -> ValueError:
    return ValueError(f"{name}={value!r} is invalid: allowed {allowed}")


def resolve(group: DimensionGroup, requested: dict, current: dict) -> dict[str, int]:
    """The new config values of a group: the requested ones, the current ones where `None`; a GQA group keeps
    its query heads per KV group unless told otherwise (an MHA model stays MHA)."""
    if group.selection == "gqa":
        q_key, kv_key = group.config_keys
        n_q, n_kv = current[q_key], current[kv_key]
        new_q, new_kv = requested.get(q_key), requested.get(kv_key)
        if new_kv is None:
            new_kv = new_q if (new_q is not None and n_kv == n_q) else n_kv
        if new_q is None:
            new_q = new_kv * (n_q // n_kv)
        return {q_key: new_q, kv_key: new_kv}
    return {k: requested.get(k) or current[k] for k in group.config_keys}


def validate(group: DimensionGroup, new: dict, current: dict) -> None:
    """Raise `ValueError` naming the field, value and allowed range when `new` cannot be cut from `current`."""
    for key in reversed(group.config_keys):  # KV groups before the query heads derived from them
        if new[key] > current[key]:
            raise _fail(key, new[key], f"1..{current[key]} (the model's current {key})")
    # an unchanged size is always allowed (a dense Granite 4 has 0 experts and a default top-k)
    if (
        group.lower_bound
        and new[group.key] != current[group.key]
        and new[group.key] < current[group.lower_bound]
    ):
        low = current[group.lower_bound]
        raise _fail(
            group.key,
            new[group.key],
            f"{low}..{current[group.key]} (at least {group.lower_bound}={low}, the experts each token uses)",
        )
    if group.selection == "gqa":
        q_key, kv_key = group.config_keys
        n_q, n_kv, new_q, new_kv = current[q_key], current[kv_key], new[q_key], new[kv_key]
        if new_q % new_kv:
            raise _fail(q_key, new_q, f"a multiple of {kv_key}={new_kv}")
        if new_q // new_kv > n_q // n_kv:
            allowed = ", ".join(str(new_kv * r) for r in range(1, n_q // n_kv + 1))
            raise _fail(
                q_key,
                new_q,
                f"one of {allowed} (at most {n_q // n_kv} query heads per KV group with {kv_key}={new_kv}, "
                "to keep GQA uniform)",
            )
