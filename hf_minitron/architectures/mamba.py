"""The Mamba-2 head group, declared once for every hybrid family (config key names differ between them)."""

from __future__ import annotations

from hf_minitron.architectures.dimensions import DimensionGroup, Observation, Segment, TensorSlice


def mamba2_heads(
    mixer: str,
    layer_kinds: tuple[str, ...],
    *,
    heads_key: str = "mamba_num_heads",
    groups_key: str = "n_groups",
    head_dim_key: str = "mamba_head_dim",
    state_key: str = "ssm_state_size",
) -> DimensionGroup:
    """Mamba-2 SSM heads: `in_proj` rows [z | x | B | C | dt], depthwise `conv1d` channels [x | B | C], per-head
    `dt_bias`, `A_log`, `D`, the grouped gated RMSNorm (statistic per group of heads), `out_proj` columns. Heads
    are chosen like GQA query heads with the SSM groups as KV groups, so every group keeps the same number of heads
    and its B/C (which its heads share); the groups themselves are kept (`fixed_keys` in the spec), except with one
    head per group (`n_groups == heads`), where a group goes with its head (B/C rows, conv channels, norm group).

    Args:
        mixer (`str`): The mixer module, relative to a layer (`"mixer"`, `"mamba"`).
        layer_kinds (`tuple[str, ...]`): The layer kinds that have it (empty: every layer).
        heads_key, groups_key, head_dim_key, state_key (`str`): The family's config names of the head count,
            the group count, the channels per head and the state size per group.
    """
    head = Segment("query", head_dim_key)  # one head's channels: z, x, the gated norm, out_proj columns
    group = Segment("kv", state_key)  # B or C of one group
    per_head = Segment("query", 1)  # dt, dt_bias, A_log, D
    in_proj = (head, head, group, group, per_head)
    conv = (head, group, group)
    m = mixer

    def inner(c) -> int:
        return getattr(c, heads_key) * getattr(c, head_dim_key)

    return DimensionGroup(
        name="mamba_heads",
        config_keys=(heads_key, groups_key),
        unit=f"one Mamba-2 SSM head of {head_dim_key} channels ({groups_key} kept; the same heads in every group)",
        scope="layer",
        slices=(
            TensorSlice(f"{m}.in_proj.weight", 0, in_proj),
            TensorSlice(f"{m}.in_proj.bias", 0, in_proj),
            TensorSlice(f"{m}.conv1d.weight", 0, conv),
            TensorSlice(f"{m}.conv1d.bias", 0, conv),
            TensorSlice(f"{m}.dt_bias", 0, (per_head,)),
            TensorSlice(f"{m}.A_log", 0, (per_head,)),
            TensorSlice(f"{m}.D", 0, (per_head,)),
            # the gated norm's statistic spans a group's heads: its gain is rescaled by the per-group widths
            TensorSlice(f"{m}.norm.weight", 0, (head,), rms_width="kv"),
            TensorSlice(f"{m}.out_proj.weight", 1, (head,), role="in"),
        ),
        observe=Observation((f"{m}.out_proj",), at="input", rows=head_dim_key),
        selection="gqa",
        search_step="gqa",
        layer_kinds=layer_kinds,
        module_attributes=(
            (m, "num_heads", lambda c: getattr(c, heads_key)),
            (m, "n_groups", lambda c: getattr(c, groups_key)),  # changes only with one head per group
            (m, "intermediate_size", inner),
            (m, "conv_dim", lambda c: inner(c) + 2 * getattr(c, groups_key) * getattr(c, state_key)),
            (f"{m}.norm", "group_size", lambda c: inner(c) // getattr(c, groups_key)),
        ),
    )


def mamba2_hidden_slices(
    layers_path: str, mixer: str, layer_kinds: tuple[str, ...]
) -> tuple[TensorSlice, ...]:
    """What a Mamba-2 mixer reads and writes of the residual stream (`in_proj` columns, `out_proj` rows)."""
    p = f"{layers_path}.*.{mixer}"
    return (
        TensorSlice(f"{p}.in_proj.weight", 1, role="in", layer_kinds=layer_kinds),
        TensorSlice(f"{p}.out_proj.weight", 0, layer_kinds=layer_kinds),
        TensorSlice(f"{p}.out_proj.bias", 0, layer_kinds=layer_kinds),
    )
