"""Qwen3-Next: Gated DeltaNet and gated full-attention layers (`layer_types`), each with a Qwen2-MoE style MLP."""

from hf_minitron.architectures.deltanet import deltanet_heads, deltanet_hidden_slices, gated_query
from hf_minitron.architectures.layout import with_layer_kinds
from hf_minitron.architectures.moe import QWEN2_MOE, moe_groups, sparse_step_pattern
from hf_minitron.architectures.spec import ArchitectureSpec, register

LINEAR, FULL = "linear_attention", "full_attention"
MIXERS = {"self_attn": (FULL,), "linear_attn": (LINEAR,)}

QWEN3_NEXT = register(
    ArchitectureSpec(
        model_types=("qwen3_next",),
        groups=(
            *with_layer_kinds(
                gated_query(
                    moe_groups(
                        experts_key="num_experts",
                        width_key="moe_intermediate_size",
                        dense_mlp=True,
                        shared_expert="mlp.shared_expert",
                        extra_hidden_slices=deltanet_hidden_slices("model.layers", "linear_attn", "qkvz"),
                    )
                ),
                MIXERS,
            ),
            deltanet_heads("linear_attn", (LINEAR,), "qkvz"),
        ),
        norm_weight_offset=1.0,
        module_size_attributes=QWEN2_MOE.module_size_attributes,
        layer_pattern_values=sparse_step_pattern,
        layer_kind_key="layer_types",
        supported_layer_kinds=(LINEAR, FULL),
        required_layer_kinds=(FULL,),
        notes="Gated DeltaNet in_proj_qkvz / in_proj_ba laid out per key head; full-attention q_proj rows are "
        "[q | gate] per head; q/k norms over head_dim (kept); sparse MoE + shared expert (dense MLP in "
        "mlp_only_layers).",
    )
)
