"""Qwen 3.5 text models: Gated DeltaNet and gated full-attention layers (`layer_types`), dense MLPs or MoE."""

from hf_minitron.architectures.deltanet import deltanet_heads, deltanet_hidden_slices, gated_query
from hf_minitron.architectures.layout import decoder_groups, with_layer_kinds
from hf_minitron.architectures.moe import QWEN2_MOE, moe_groups
from hf_minitron.architectures.spec import ArchitectureSpec, register

LINEAR, FULL = "linear_attention", "full_attention"
MIXERS = {"self_attn": (FULL,), "linear_attn": (LINEAR,)}

QWEN3_5_TEXT = register(
    ArchitectureSpec(
        model_types=("qwen3_5_text",),
        groups=(
            *with_layer_kinds(
                gated_query(
                    decoder_groups(
                        extra_hidden_slices=deltanet_hidden_slices("model.layers", "linear_attn", "qkv")
                    )
                ),
                MIXERS,
            ),
            deltanet_heads("linear_attn", (LINEAR,), "qkv"),
        ),
        norm_weight_offset=1.0,
        layer_kind_key="layer_types",
        supported_layer_kinds=(LINEAR, FULL),
        required_layer_kinds=(FULL,),
        notes="Gated DeltaNet in_proj_qkv [q | k | v] plus in_proj_z / in_proj_b / in_proj_a; full-attention "
        "q_proj rows are [q | gate] per head; q/k norms over head_dim (kept). A composite qwen3_5 checkpoint "
        "loads as this text model with AutoModelForCausalLM (the vision tower is left out).",
    )
)
QWEN3_5_MOE_TEXT = register(
    ArchitectureSpec(
        model_types=("qwen3_5_moe_text",),
        groups=(
            *with_layer_kinds(
                gated_query(
                    moe_groups(
                        experts_key="num_experts",
                        width_key="moe_intermediate_size",
                        shared_expert="mlp.shared_expert",
                        extra_hidden_slices=deltanet_hidden_slices("model.layers", "linear_attn", "qkv"),
                    )
                ),
                MIXERS,
            ),
            deltanet_heads("linear_attn", (LINEAR,), "qkv"),
        ),
        norm_weight_offset=1.0,
        module_size_attributes=QWEN2_MOE.module_size_attributes,
        layer_kind_key="layer_types",
        supported_layer_kinds=(LINEAR, FULL),
        required_layer_kinds=(FULL,),
        notes="Qwen 3.5's DeltaNet and gated attention with a sparse MoE block in every layer (experts [E, 2I, H], "
        "router mlp.gate, a shared expert with a sigmoid gate).",
    )
)
