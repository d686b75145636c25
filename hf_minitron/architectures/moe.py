"""Mixture-of-experts families: experts as fused 3D tensors, a router, optional shared expert and dense layers."""

from __future__ import annotations

import dataclasses

from hf_minitron.architectures.dimensions import DimensionGroup, Observation, Segment, TensorSlice
from hf_minitron.architectures.layout import decoder_groups
from hf_minitron.architectures.spec import ArchitectureSpec, register

_UNIT = (Segment(),)


def _optional(group: DimensionGroup, keep=lambda s: True) -> DimensionGroup:
    """The group with every slice optional (present in some layers only) and its observation too."""
    return dataclasses.replace(
        group,
        slices=tuple(dataclasses.replace(s, optional=True) for s in group.slices if keep(s)),
        observe=dataclasses.replace(group.observe, optional=True),
    )


def moe_groups(
    *,
    experts_key: str,
    width_key: str,
    dense_mlp: bool = False,
    shared_expert: str | None = None,
    shared_key: str = "shared_expert_intermediate_size",
    router: str = "mlp.gate",
    experts: str = "mlp.experts",
    transposed: bool = False,
    interleaved: bool = False,
    expert_bias: bool = False,
    shared_gate: bool = True,
    shared_rows: int | str = 1,
    shared_names: dict[str, str] | None = None,
    dense_key: str = "intermediate_size",
    extra_head_slices: tuple[TensorSlice, ...] = (),
    extra_expert_slices: tuple[TensorSlice, ...] = (),
    **decoder,
) -> tuple[DimensionGroup, ...]:
    """The Llama-layout groups of a MoE decoder plus experts, expert neurons and the shared expert's neurons.

    Args:
        experts_key (`str`): Config key counting the experts of a MoE layer (`num_experts`, `num_local_experts`).
        width_key (`str`): Config key of an expert's width (`moe_intermediate_size`, `intermediate_size`).
        dense_mlp (`bool`): Some layers have a dense MLP (`mlp_only_layers`): it keeps the `neurons` group on
            `intermediate_size`, present only in those layers.
        shared_expert (`str`, *optional*): Module path of a shared expert MLP (Qwen2-MoE, Llama 4), with a
            sigmoid gate `{shared_expert}_gate` reading the hidden size when `shared_gate`.
        shared_rows (`int | str`): Shared-expert neurons per unit of `shared_key` (a config key: ERNIE-4.5's
            shared experts are `moe_intermediate_size x moe_num_shared_experts` wide and pruned with the experts'
            width, so a unit is that many adjacent neurons).
        shared_names (`dict[str, str]`, *optional*): `decoder_groups` names of the shared MLP's projections when
            they differ from gate/up/down (Granite's fused `input_linear` / `output_linear`).
        transposed (`bool`): Experts stored `[E, H, 2I]` / `[E, I, H]` (gpt-oss, Llama 4); else `[E, 2I, H]` /
            `[E, H, I]`. `interleaved`: the 2I entries alternate gate, up (gpt-oss) instead of [gate | up].
        dense_key (`str`): Config key of the dense layers' MLP width (`intermediate_size_mlp` in Llama 4).
        extra_head_slices (`tuple[TensorSlice, ...]`): Per-head tensors beyond the projections (gpt-oss `sinks`).
        extra_expert_slices (`tuple[TensorSlice, ...]`): Per-expert tensors beyond the router's (ERNIE-4.5's
            `[1, E]` score-correction bias).
    """
    layers_path = decoder.get("layers_path", "model.layers")
    neurons, heads, channels = decoder_groups(**decoder)
    neurons = dataclasses.replace(neurons, config_keys=(dense_key,))
    mlp = decoder.get("mlp", "mlp") + "."
    every = f"{layers_path}.*."
    e = experts
    # ---------------------------------------------------------------- experts: dim 0 of every expert tensor
    gate_up = (Segment(rows=2),) if interleaved else (Segment(), Segment())
    if transposed:  # [E, H, 2I], [E, I, H]
        width_slices = (
            TensorSlice(f"{e}.gate_up_proj", 2, gate_up, block_dim=0),
            TensorSlice(f"{e}.gate_up_proj_bias", 1, gate_up, block_dim=0),
            TensorSlice(f"{e}.down_proj", 1, role="in", block_dim=0),
        )
        hidden_slices = (
            TensorSlice(f"{every}{e}.gate_up_proj", 1, role="in", optional=True),
            TensorSlice(f"{every}{e}.down_proj", 2, optional=True),
            TensorSlice(f"{every}{e}.down_proj_bias", 1, optional=True),
        )
    else:  # [E, 2I, H] with [gate | up] rows, [E, H, I]
        width_slices = (
            TensorSlice(f"{e}.gate_up_proj", 1, (Segment(), Segment()), block_dim=0),
            TensorSlice(f"{e}.down_proj", 2, role="in", block_dim=0),
        )
        hidden_slices = (
            TensorSlice(f"{every}{e}.gate_up_proj", 2, role="in", optional=True),
            TensorSlice(f"{every}{e}.down_proj", 1, optional=True),
        )
    names = ("gate_up_proj", "down_proj") + (("gate_up_proj_bias", "down_proj_bias") if expert_bias else ())
    expert_groups = (
        DimensionGroup(
            name="expert_neurons",
            config_keys=(width_key,),
            unit="one neuron of every expert (the same count in each, ranked per expert)",
            scope="layer",
            slices=tuple(dataclasses.replace(s, optional=True) for s in width_slices),
            observe=Observation((e,), at="experts", optional=True),
            within=experts_key,
        ),
        DimensionGroup(
            name="experts",
            config_keys=(experts_key,),
            unit="one expert (its fused tensors and its router row)",
            scope="layer",
            slices=(
                *(TensorSlice(f"{e}.{n}", 0, optional=True) for n in names),
                TensorSlice(f"{router}.weight", 0, optional=True),
                TensorSlice(f"{router}.bias", 0, optional=True),
                TensorSlice(f"{router}.e_score_correction_bias", 0, optional=True),
                *extra_expert_slices,
            ),
            observe=Observation((e,), at="experts", optional=True),
            lower_bound="num_experts_per_tok",
        ),
    )
    hidden_slices += (TensorSlice(f"{every}{router}.weight", 1, role="in", optional=True),)
    # ---------------------------------------------------------------- dense MLP (some layers) and shared expert
    is_mlp = lambda s: f".{mlp}" in f".{s.path}" and ".experts." not in s.path  # noqa: E731
    groups: list[DimensionGroup] = []
    if dense_mlp:
        groups.append(_optional(neurons))
    if shared_expert:
        s_mlp, _, s_channels = decoder_groups(
            mlp=shared_expert, layers_path=layers_path, **(shared_names or {})
        )
        if shared_rows != 1:
            s_mlp = dataclasses.replace(
                s_mlp,
                slices=tuple(
                    dataclasses.replace(t, segments=tuple(Segment(rows=shared_rows) for _ in t.segments))
                    for t in s_mlp.slices
                ),
                observe=dataclasses.replace(s_mlp.observe, rows=shared_rows),
            )
        groups.append(
            dataclasses.replace(
                _optional(s_mlp),
                name="shared_neurons",
                config_keys=(shared_key,),
                unit="one neuron of the shared expert",
            )
        )
        # what of the shared MLP reads and writes the hidden size, as decoder_groups declares it for any MLP
        hidden_slices += tuple(
            dataclasses.replace(t, optional=True) for t in s_channels.slices if f".{shared_expert}." in t.path
        )
        if shared_gate:
            hidden_slices += (
                TensorSlice(f"{every}{shared_expert}_gate.weight", 1, role="in", optional=True),
            )
    # the hidden size: dense-MLP slices optional (dropped when no layer has one), plus every expert tensor
    kept = [
        dataclasses.replace(s, optional=True) if is_mlp(s) else s
        for s in channels.slices
        if dense_mlp or not is_mlp(s)
    ]
    channels = dataclasses.replace(channels, slices=(*kept, *hidden_slices))
    heads = dataclasses.replace(heads, slices=(*heads.slices, *extra_head_slices))
    # expert neurons before experts: their per-expert kept sets index the experts before any is dropped
    return (*groups, *expert_groups, heads, channels)


def sparse_step_pattern(config, kept_layers: list[int]) -> dict:
    """Qwen-MoE derives a layer's kind from its index (`decoder_sparse_step`, `mlp_only_layers`): after dropping
    layers, name the dense ones explicitly with a step of 1."""
    step = getattr(config, "decoder_sparse_step", 1) or 1
    dense = set(getattr(config, "mlp_only_layers", None) or [])
    was_dense = [i in dense or not (config.num_experts > 0 and (i + 1) % step == 0) for i in kept_layers]
    return {"decoder_sparse_step": 1, "mlp_only_layers": [j for j, d in enumerate(was_dense) if d]}


EXPERT_ATTRIBUTES = (("hidden_dim", "hidden_size"),)  # experts modules and routers cache it

QWEN3_MOE = register(
    ArchitectureSpec(
        model_types=("qwen3_moe",),
        groups=moe_groups(experts_key="num_experts", width_key="moe_intermediate_size", dense_mlp=True),
        module_size_attributes=(
            *EXPERT_ATTRIBUTES,
            ("num_experts", "num_experts"),
            ("intermediate_dim", "moe_intermediate_size"),
        ),
        layer_pattern_values=sparse_step_pattern,
        notes="Experts [E, 2I, H] / [E, H, I], router mlp.gate; dense layers (mlp_only_layers, "
        "decoder_sparse_step) keep an MLP on intermediate_size; q/k norms over head_dim.",
    )
)
QWEN2_MOE = register(
    ArchitectureSpec(
        model_types=("qwen2_moe",),
        groups=moe_groups(
            experts_key="num_experts",
            width_key="moe_intermediate_size",
            dense_mlp=True,
            shared_expert="mlp.shared_expert",
        ),
        layer_prefix_count_fields=("max_window_layers",),
        module_size_attributes=QWEN3_MOE.module_size_attributes,
        layer_pattern_values=sparse_step_pattern,
        notes="Qwen3-MoE's layout plus a shared expert (shared_expert_intermediate_size) with a sigmoid gate; "
        "q/k/v biases.",
    )
)
MIXTRAL = register(
    ArchitectureSpec(
        model_types=("mixtral",),
        groups=moe_groups(experts_key="num_local_experts", width_key="intermediate_size"),
        module_size_attributes=(
            *EXPERT_ATTRIBUTES,
            ("num_experts", "num_local_experts"),
            ("intermediate_dim", "intermediate_size"),
        ),
        notes="Every layer is sparse; experts sized by intermediate_size.",
    )
)
OLMOE = register(
    ArchitectureSpec(
        model_types=("olmoe",),
        groups=moe_groups(
            experts_key="num_experts",
            width_key="intermediate_size",
            full_width_head_norms=("q_norm", "k_norm"),
        ),
        heads_span_hidden=True,
        module_size_attributes=(
            *EXPERT_ATTRIBUTES,
            ("num_experts", "num_experts"),
            ("intermediate_dim", "intermediate_size"),
        ),
        notes="q_norm spans hidden_size and k_norm hidden_size // heads x KV heads: heads go with the hidden size.",
    )
)
GPT_OSS = register(
    ArchitectureSpec(
        model_types=("gpt_oss",),
        groups=moe_groups(
            experts_key="num_local_experts",
            width_key="intermediate_size",
            router="mlp.router",
            transposed=True,
            interleaved=True,
            expert_bias=True,
            extra_head_slices=(TensorSlice("self_attn.sinks", 0, (Segment("query"),)),),
        ),
        module_size_attributes=(
            *EXPERT_ATTRIBUTES,
            ("num_experts", "num_local_experts"),
        ),
        notes="Experts [E, H, 2I] with interleaved gate/up columns and biases, router with a bias, one attention "
        "sink per query head (sliced with the heads); sliding/full layer_types.",
    )
)
LLAMA4_TEXT = register(
    ArchitectureSpec(
        model_types=("llama4_text",),
        groups=moe_groups(
            experts_key="num_local_experts",
            width_key="intermediate_size",
            dense_mlp=True,
            dense_key="intermediate_size_mlp",
            shared_expert="feed_forward.shared_expert",
            shared_key="intermediate_size",
            shared_gate=False,
            router="feed_forward.router",
            experts="feed_forward.experts",
            transposed=True,
            mlp="feed_forward",
        ),
        per_layer_config_lists=("layer_types", "no_rope_layers"),
        layer_index_lists=("moe_layers",),
        module_size_attributes=(
            *EXPERT_ATTRIBUTES,
            ("num_experts", "num_local_experts"),
            ("expert_dim", "intermediate_size"),
        ),
        notes="Own experts class run on every token with router-scaled inputs ([E, H, 2I] with [gate | up] "
        "columns); the shared expert and the experts share intermediate_size (pruned together); dense layers "
        "(not in moe_layers) use intermediate_size_mlp; no_rope_layers sliced, moe_layers remapped.",
    )
)
