"""Granite-MoE (granitemoe) and Granite-MoE with a shared MLP (granitemoeshared): experts under block_sparse_moe,
Granite's multipliers."""

from __future__ import annotations

from hf_minitron.architectures.moe import EXPERT_ATTRIBUTES, moe_groups
from hf_minitron.architectures.spec import ArchitectureSpec, register

# Mixtral's experts under block_sparse_moe, shared by both Granite-MoE variants
_EXPERTS = dict(
    experts_key="num_local_experts",
    width_key="intermediate_size",
    mlp="block_sparse_moe",
    router="block_sparse_moe.router",
    experts="block_sparse_moe.experts",
)

GRANITEMOE = register(
    ArchitectureSpec(
        model_types=("granitemoe",),
        groups=moe_groups(**_EXPERTS),
        module_size_attributes=(
            *EXPERT_ATTRIBUTES,
            ("num_experts", "num_local_experts"),
            ("intermediate_dim", "intermediate_size"),
            ("input_size", "hidden_size"),
        ),
        notes="Mixtral's layout under block_sparse_moe, with Granite's embedding, residual, attention and logit "
        "multipliers (scalars, kept).",
    )
)
GRANITEMOE_SHARED = register(
    ArchitectureSpec(
        model_types=("granitemoeshared",),
        groups=moe_groups(
            **_EXPERTS,
            shared_expert="shared_mlp",
            shared_key="shared_intermediate_size",
            shared_gate=False,
            shared_names={"gate_up_proj": "input_linear", "down_proj": "output_linear"},
        ),
        module_size_attributes=GRANITEMOE.module_size_attributes,
        notes="Granite-MoE plus a shared MLP next to the experts (shared_mlp: fused [gate | up] input_linear, "
        "output_linear), pruned like a dense MLP on shared_intermediate_size (its cached hidden_size is not used "
        "by its forward, which splits input_linear in halves).",
    )
)
