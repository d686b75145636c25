"""Phi-3.5-MoE (phimoe): Mixtral's layout with LayerNorms, biases and a sparsemixer router."""

from __future__ import annotations

from hf_minitron.architectures.moe import EXPERT_ATTRIBUTES, moe_groups
from hf_minitron.architectures.spec import ArchitectureSpec, register

PHIMOE = register(
    ArchitectureSpec(
        model_types=("phimoe",),
        groups=moe_groups(
            experts_key="num_local_experts", width_key="intermediate_size", router="mlp.router"
        ),
        module_size_attributes=(
            *EXPERT_ATTRIBUTES,
            ("num_experts", "num_local_experts"),
            ("intermediate_dim", "intermediate_size"),
            ("ffn_dim", "intermediate_size"),
        ),
        notes="Mixtral's layout with LayerNorms (weights and biases cut with the channels), optional attention and "
        "LM-head biases, and a sparsemixer top-2 router (mlp.router).",
    )
)
