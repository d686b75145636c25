"""The dimension groups of a Llama-shaped decoder, declared once; families pass only what differs."""

from __future__ import annotations

from dataclasses import replace

from hf_minitron.architectures.dimensions import DimensionGroup, Observation, Segment, TensorSlice

HEAD = "head_dim"
_Q = Segment("query", HEAD, magnitude=False)
_K = Segment("kv", HEAD, magnitude=False)
_V = Segment("kv", HEAD)
_O = Segment("query", HEAD)


_UNIT = (Segment(),)


def _with_bias(path: str, dim: int = 0, segments=_UNIT, **kw) -> tuple[TensorSlice, ...]:
    """A weight and its bias (a missing bias is skipped when the model has none)."""
    return (
        TensorSlice(f"{path}.weight", dim, segments, **kw),
        TensorSlice(f"{path}.bias", 0, segments, **kw),
    )


def text_model_paths(prefix: str) -> dict[str, str]:
    """Layer, embedding and final-norm paths of a text model nested under `prefix` (a vision-language wrapper's
    `model.language_model`), for both `decoder_groups` and `ArchitectureSpec`."""
    return {
        "layers_path": f"{prefix}.layers",
        "embed_path": f"{prefix}.embed_tokens",
        "final_norm_path": f"{prefix}.norm",
    }


def decoder_groups(
    *,
    layers_path: str = "model.layers",
    embed_path: str = "model.embed_tokens",
    final_norm_path: str = "model.norm",
    lm_head_path: str = "lm_head",
    attention: str = "self_attn",
    q_proj: str | None = "q_proj",
    k_proj: str | None = "k_proj",
    v_proj: str | None = "v_proj",
    qkv_proj: str | None = None,
    o_proj: str = "o_proj",
    mlp: str = "mlp",
    gate_proj: str | None = "gate_proj",
    up_proj: str | None = "up_proj",
    gate_up_proj: str | None = None,
    down_proj: str = "down_proj",
    layer_norms: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm"),
    full_width_head_norms: tuple[str, str] | None = None,
    extra_hidden_slices: tuple[TensorSlice, ...] = (),
) -> tuple[DimensionGroup, ...]:
    """Neurons, heads and channels of a decoder with one attention and one MLP per layer.

    Args:
        qkv_proj (`str`, *optional*): A fused [q | k | v] projection (Phi-3) instead of `q_proj/k_proj/v_proj`.
        gate_up_proj (`str`, *optional*): A fused [gate | up] projection (Phi-3, GLM-4) instead of gate/up.
        gate_proj (`str | None`): `None` for an ungated MLP (`up_proj` is then its first linear).
        layer_norms (`tuple[str, ...]`): The hidden-size norms of a layer.
        full_width_head_norms (`tuple[str, str]`, *optional*): q/k norms over all heads (OLMo 2), sliced with them.
        extra_hidden_slices (`tuple[TensorSlice, ...]`): Model-level tensors that read or write the hidden size
            (a multimodal projector's output).
    """
    a, m = attention, mlp
    # ---------------------------------------------------------------- MLP neurons
    if gate_up_proj:
        mlp_in = _with_bias(f"{m}.{gate_up_proj}", 0, (Segment(), Segment()))
        mlp_readers = (f"{m}.{gate_up_proj}",)
    else:
        names = tuple(n for n in (gate_proj, up_proj) if n)
        mlp_in = tuple(s for n in names for s in _with_bias(f"{m}.{n}"))
        mlp_readers = tuple(f"{m}.{n}" for n in names)
    neurons = DimensionGroup(
        name="neurons",
        config_keys=("intermediate_size",),
        unit="one MLP neuron",
        scope="layer",
        slices=(*mlp_in, TensorSlice(f"{m}.{down_proj}.weight", 1, role="in")),
        observe=Observation((f"{m}.{down_proj}",), at="input"),
        search_ratio_of="hidden_size",
    )
    # ---------------------------------------------------------------- attention heads
    if qkv_proj:
        qkv = _with_bias(f"{a}.{qkv_proj}", 0, (_Q, _K, _V))
        attn_readers = (f"{a}.{qkv_proj}",)
    else:
        qkv = (
            *_with_bias(f"{a}.{q_proj}", 0, (_Q,)),
            *_with_bias(f"{a}.{k_proj}", 0, (_K,)),
            *_with_bias(f"{a}.{v_proj}", 0, (_V,)),
        )
        attn_readers = tuple(f"{a}.{n}" for n in (q_proj, k_proj, v_proj))
    head_norms = ()
    if full_width_head_norms:
        qn, kn = full_width_head_norms
        head_norms = (
            TensorSlice(f"{a}.{qn}.weight", 0, (_Q,), rms_width=True),
            TensorSlice(f"{a}.{kn}.weight", 0, (_K,), rms_width=True),
        )
    heads = DimensionGroup(
        name="heads",
        config_keys=("num_attention_heads", "num_key_value_heads"),
        unit="one query head of head_dim rows (KV groups whole, with their query heads)",
        scope="layer",
        slices=(*qkv, *head_norms, TensorSlice(f"{a}.{o_proj}.weight", 1, (_O,), role="in")),
        observe=Observation((f"{a}.{o_proj}",), at="input", rows=HEAD),
        selection="gqa",
        search_step="gqa",
    )
    # ---------------------------------------------------------------- hidden channels (the residual stream)
    per_layer = f"{layers_path}.*"
    readers = tuple(
        TensorSlice(f"{per_layer}.{p}.weight", 1, role="in") for p in (*attn_readers, *mlp_readers)
    )
    writers = (
        *_with_bias(f"{per_layer}.{a}.{o_proj}"),
        *_with_bias(f"{per_layer}.{m}.{down_proj}"),
    )
    norms = tuple(
        s
        for path in (*(f"{per_layer}.{n}" for n in layer_norms), final_norm_path)
        for s in (TensorSlice(f"{path}.weight", 0, rms_width=True), TensorSlice(f"{path}.bias", 0))
    )
    channels = DimensionGroup(
        name="channels",
        config_keys=("hidden_size",),
        unit="one embedding channel (the same in every layer)",
        scope="model",
        slices=(
            TensorSlice(f"{embed_path}.weight", 1),
            *readers,
            *writers,
            *norms,
            TensorSlice(f"{lm_head_path}.weight", 1, role="in"),
            *extra_hidden_slices,
        ),
        observe=Observation(
            (*(f"{per_layer}.{n}" for n in layer_norms), final_norm_path),
            at="output",
        ),
    )
    return (neurons, heads, channels)


def with_layer_kinds(
    groups: tuple[DimensionGroup, ...], kinds_of: dict[str, tuple[str, ...]]
) -> tuple[DimensionGroup, ...]:
    """The groups of a hybrid model whose layers have one mixer each: a per-layer group, or a `*` slice of a
    model-wide group, whose module path (relative to a layer) starts with a key of `kinds_of` lives only in the
    layers of those kinds (the mixer names of each kind are distinct)."""

    def kinds(path: str) -> tuple[str, ...]:
        return next((v for k, v in kinds_of.items() if path.startswith(k + ".")), ())

    out = []
    for group in groups:
        if group.scope == "layer":
            out.append(replace(group, layer_kinds=group.layer_kinds or kinds(group.slices[0].path)))
            continue
        slices = tuple(
            replace(s, layer_kinds=s.layer_kinds or kinds(s.path.split("*.", 1)[1])) if "*." in s.path else s
            for s in group.slices
        )
        out.append(replace(group, slices=slices))
    return tuple(out)
