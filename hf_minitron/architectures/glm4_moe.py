"""GLM-4-MoE (GLM-4.5, GLM-4.5-Air): sigmoid-routed experts with a score-correction bias, shared experts, dense
first layers."""

from __future__ import annotations

from hf_minitron.architectures.moe import EXPERT_ATTRIBUTES, moe_groups
from hf_minitron.architectures.spec import ArchitectureSpec, register

GLM4_MOE = register(
    ArchitectureSpec(
        model_types=("glm4_moe",),
        groups=moe_groups(
            experts_key="num_local_experts",  # the config's attribute_map names n_routed_experts so
            width_key="moe_intermediate_size",
            dense_mlp=True,
            shared_expert="mlp.shared_experts",
            shared_key="moe_intermediate_size",
            shared_gate=False,
            shared_rows="n_shared_experts",
        ),
        layer_prefix_count_fields=("first_k_dense_replace",),
        module_size_attributes=(
            *EXPERT_ATTRIBUTES,
            ("num_experts", "num_local_experts"),
            ("intermediate_dim", "moe_intermediate_size"),
        ),
        required_values=(("n_group", 1),),
        notes="Experts [E, 2I, H] routed by sigmoid scores plus e_score_correction_bias (a buffer, cut with the "
        "experts); num_local_experts is the config's alias of n_routed_experts. The shared expert is "
        "moe_intermediate_size x n_shared_experts wide, pruned with the experts' width (ranked on its own, in "
        "units of n_shared_experts adjacent neurons; GLM-4.5 and GLM-4.5-Air have one); the first first_k_dense_replace layers are dense (intermediate_size), "
        "recounted when layers are dropped. Group-limited routing (n_group > 1) is refused.",
    )
)
