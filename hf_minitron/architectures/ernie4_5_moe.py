"""ERNIE-4.5 MoE: softmax-routed experts with a [1, E] score-correction bias, shared experts, MoE layers placed by
start, end and interval."""

from __future__ import annotations

from hf_minitron.architectures.dimensions import TensorSlice
from hf_minitron.architectures.moe import EXPERT_ATTRIBUTES, moe_groups
from hf_minitron.architectures.spec import ArchitectureSpec, register


def ernie_moe_pattern(config, kept_layers: list[int]) -> dict:
    """ERNIE-4.5 places its MoE layers by `moe_layer_start_index`, `moe_layer_end_index` and
    `moe_layer_interval`: after dropping layers, the same three for the kept ones (`ValueError` naming
    `layers_to_drop` when no such triple describes them)."""
    start, end, step = config.moe_layer_start_index, config.moe_layer_end_index, config.moe_layer_interval
    end = config.num_hidden_layers - 1 if end == -1 else end
    sparse = [j for j, i in enumerate(kept_layers) if (i + 1) % step == 0 and start <= i <= end]
    if not sparse:
        return {"moe_layer_start_index": len(kept_layers), "moe_layer_end_index": len(kept_layers) - 1}
    for interval in dict.fromkeys((step, 1)):
        rebuilt = [j for j in range(sparse[0], sparse[-1] + 1) if (j + 1) % interval == 0]
        if rebuilt == sparse:
            return {
                "moe_layer_start_index": sparse[0],
                "moe_layer_end_index": sparse[-1],
                "moe_layer_interval": interval,
            }
    raise ValueError(
        f"layers_to_drop leaves MoE layers at {sparse} of the kept ones, which moe_layer_start_index, "
        "moe_layer_end_index and moe_layer_interval cannot describe: allowed layer choices that keep the MoE "
        "layers evenly spaced"
    )


ERNIE4_5_MOE = register(
    ArchitectureSpec(
        model_types=("ernie4_5_moe",),
        groups=moe_groups(
            experts_key="num_experts",  # the config's attribute_map names moe_num_experts so
            width_key="moe_intermediate_size",
            dense_mlp=True,
            shared_expert="mlp.shared_experts",
            shared_key="moe_intermediate_size",
            shared_gate=False,
            shared_rows="moe_num_shared_experts",
            extra_expert_slices=(
                TensorSlice("mlp.gate.moe_statics.e_score_correction_bias", 1, optional=True),
            ),
        ),
        module_size_attributes=(
            *EXPERT_ATTRIBUTES,
            ("num_experts", "num_experts"),
            ("intermediate_dim", "moe_intermediate_size"),
        ),
        layer_pattern_values=ernie_moe_pattern,
        notes="Experts [E, 2I, H], a float32 softmax router whose selection adds a [1, E] score-correction bias "
        "(mlp.gate.moe_statics, cut with the experts); the shared experts are moe_intermediate_size x "
        "moe_num_shared_experts wide and pruned with the experts' width, in units of moe_num_shared_experts adjacent "
        "neurons; dense layers outside moe_layer_start_index..moe_layer_end_index (every moe_layer_interval) keep "
        "intermediate_size, and the three are rewritten when layers are dropped.",
    )
)
