"""Gated DeltaNet (linear attention) heads and Qwen's gated query rows, declared once for every family."""

from __future__ import annotations

import dataclasses

from hf_minitron.architectures.dimensions import DimensionGroup, Observation, Segment, TensorSlice

VALUE_HEADS, KEY_HEADS = "linear_num_value_heads", "linear_num_key_heads"
_K = Segment("kv", "linear_key_head_dim", magnitude=False)  # one key head's q or k channels
_V = Segment("query", "linear_value_head_dim")  # one value head's v channels (its output path)
_Z = Segment("query", "linear_value_head_dim", magnitude=False)  # its output gate
_ONE = Segment("query", 1, magnitude=False)  # its beta or decay input (b, a), dt_bias, A_log

# the projections of each family's mixer: (module, segments, grouped_by)
LAYOUTS: dict[str, tuple[tuple[str, tuple[Segment, ...], str | None], ...]] = {
    # Qwen3-Next: per key head [q | k | v of its value heads | z of its value heads], and [b | a] likewise
    "qkvz": (("in_proj_qkvz", (_K, _K, _V, _Z), "kv"), ("in_proj_ba", (_ONE, _ONE), "kv")),
    # Qwen 3.5: [all q | all k | all v], then z, b, a on their own
    "qkv": (
        ("in_proj_qkv", (_K, _K, _V), None),
        ("in_proj_z", (_Z,), None),
        ("in_proj_b", (_ONE,), None),
        ("in_proj_a", (_ONE,), None),
    ),
    # OLMo Hybrid: every input projection separate, the gate is g_proj
    "separate": (
        ("q_proj", (_K,), None),
        ("k_proj", (_K,), None),
        ("v_proj", (_V,), None),
        ("g_proj", (_Z,), None),
        ("a_proj", (_ONE,), None),
        ("b_proj", (_ONE,), None),
    ),
}


def deltanet_heads(
    mixer: str, layer_kinds: tuple[str, ...], layout: str, out_proj: str = "out_proj"
) -> DimensionGroup:
    """Gated DeltaNet heads: value heads chosen like GQA query heads inside their key heads (each key head's q/k
    serve `linear_num_value_heads // linear_num_key_heads` consecutive value heads), so every kept key head keeps
    the same number of value heads. A value head moves with its v and z channels, its b and a inputs, its
    `dt_bias` and `A_log`, its v channels of the depthwise `conv1d` and its output-projection columns; a key head
    with its q and k channels (projections and conv). The gated norm is per head (`linear_value_head_dim` wide)
    and stays as it is. Importance: the per-head L2 norm of the output-projection input.

    Args:
        mixer (`str`): The mixer module, relative to a layer (`"linear_attn"`).
        layer_kinds (`tuple[str, ...]`): The layer kinds that have it.
        layout (`str`): A key of `LAYOUTS`: how the family lays out its input projections.
        out_proj (`str`): The output projection's name (`"o_proj"` in OLMo Hybrid).
    """
    m = mixer
    projections = tuple(
        TensorSlice(f"{m}.{name}.weight", 0, segments, grouped_by=by)
        for name, segments, by in LAYOUTS[layout]
    )

    def key_dim(c) -> int:
        return getattr(c, KEY_HEADS) * c.linear_key_head_dim

    def value_dim(c) -> int:
        return getattr(c, VALUE_HEADS) * c.linear_value_head_dim

    return DimensionGroup(
        name="linear_heads",
        config_keys=(VALUE_HEADS, KEY_HEADS),
        unit="one Gated DeltaNet value head (key heads whole, with their value heads)",
        scope="layer",
        slices=(
            *projections,
            TensorSlice(f"{m}.conv1d.weight", 0, (_K, _K, _V)),
            TensorSlice(f"{m}.conv1d.bias", 0, (_K, _K, _V)),
            TensorSlice(f"{m}.dt_bias", 0, (_ONE,)),
            TensorSlice(f"{m}.A_log", 0, (_ONE,)),
            TensorSlice(f"{m}.{out_proj}.weight", 1, (_V,), role="in"),
        ),
        observe=Observation((f"{m}.{out_proj}",), at="input", rows="linear_value_head_dim"),
        selection="gqa",
        search_step="gqa",
        layer_kinds=layer_kinds,
        module_attributes=(
            (m, "num_v_heads", lambda c: getattr(c, VALUE_HEADS)),
            (m, "num_k_heads", lambda c: getattr(c, KEY_HEADS)),
            (m, "key_dim", key_dim),
            (m, "value_dim", value_dim),
            (m, "conv_dim", lambda c: 2 * key_dim(c) + value_dim(c)),
        ),
    )


def deltanet_hidden_slices(
    layers_path: str, mixer: str, layout: str, out_proj: str = "out_proj"
) -> tuple[TensorSlice, ...]:
    """What a Gated DeltaNet mixer reads and writes of the residual stream (input-projection columns, output
    rows); their layer kinds come from `with_layer_kinds`."""
    p = f"{layers_path}.*.{mixer}"
    return (
        *(TensorSlice(f"{p}.{name}.weight", 1, role="in") for name, _, _ in LAYOUTS[layout]),
        TensorSlice(f"{p}.{out_proj}.weight", 0),
    )


def gated_query(
    groups: tuple[DimensionGroup, ...], q_proj: str = "self_attn.q_proj"
) -> tuple[DimensionGroup, ...]:
    """Qwen3-Next / Qwen 3.5 gated attention: `q_proj` rows are [q | gate] per query head (2 x head_dim), so its
    slices are laid out head by head; the gate's rows are output path like v."""
    layout = (Segment("query", "head_dim", magnitude=False), Segment("query", "head_dim", magnitude=False))

    def fix(s: TensorSlice) -> TensorSlice:
        if s.path in (f"{q_proj}.weight", f"{q_proj}.bias"):
            return dataclasses.replace(s, segments=layout, grouped_by="query")
        return s

    return tuple(
        dataclasses.replace(g, slices=tuple(fix(s) for s in g.slices)) if g.name == "heads" else g
        for g in groups
    )
