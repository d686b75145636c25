"""Nemotron-H: hybrid blocks of one `mixer` each (Mamba-2, attention, ungated MLP or routed MoE) behind one RMSNorm.
The MoE blocks are Nemotron 3 Nano's: ungated experts `[E, I, H]` / `[E, H, I]`, a sigmoid top-k router with a
score-correction bias and routing groups (`n_group`), and an ungated shared expert."""

from hf_minitron.architectures.dimensions import DimensionGroup, Observation, Segment, TensorSlice
from hf_minitron.architectures.layout import decoder_groups, with_layer_kinds
from hf_minitron.architectures.mamba import mamba2_heads, mamba2_hidden_slices
from hf_minitron.architectures.spec import ArchitectureSpec, register

MAMBA, ATTENTION, MLP, MOE = "linear_attention", "full_attention", "mlp", "moe"
_E, _ROUTER, _SHARED = "mixer.experts", "mixer.gate", "mixer.shared_experts"
_EXPERT = (Segment("query"),)  # experts are chosen like query heads, inside their routing group (`n_group`)


def _moe_groups() -> tuple[DimensionGroup, ...]:
    """Expert neurons (ranked per expert), experts (kept per routing group, with their router rows and
    score-correction bias) and the shared expert's neurons, in the `moe` blocks only; expert neurons come first:
    their per-expert kept sets index the experts before any is dropped."""
    moe = (MOE,)
    expert_neurons = DimensionGroup(
        name="expert_neurons",
        config_keys=("moe_intermediate_size",),
        unit="one neuron of every routed expert (the same count in each, ranked per expert)",
        scope="layer",
        slices=(
            TensorSlice(f"{_E}.up_proj", 1, block_dim=0),
            TensorSlice(f"{_E}.down_proj", 2, role="in", block_dim=0),
        ),
        observe=Observation((_E,), at="experts"),
        within="num_local_experts",
        layer_kinds=moe,
    )
    experts = DimensionGroup(
        name="experts",
        config_keys=("num_local_experts", "n_group"),
        unit="one routed expert (its tensors, router row and correction bias; the same count in every routing group)",
        scope="layer",
        slices=(
            TensorSlice(f"{_E}.up_proj", 0, _EXPERT),
            TensorSlice(f"{_E}.down_proj", 0, _EXPERT),
            TensorSlice(f"{_ROUTER}.weight", 0, _EXPERT),
            TensorSlice(f"{_ROUTER}.e_score_correction_bias", 0, _EXPERT),
        ),
        observe=Observation((_E,), at="experts"),
        selection="gqa",
        search_step="gqa",
        lower_bound="num_experts_per_tok",
        layer_kinds=moe,
    )
    shared = DimensionGroup(
        name="shared_neurons",
        config_keys=("moe_shared_expert_intermediate_size",),
        unit="one neuron of the shared expert",
        scope="layer",
        slices=(
            TensorSlice(f"{_SHARED}.up_proj.weight", 0),
            TensorSlice(f"{_SHARED}.up_proj.bias", 0),
            TensorSlice(f"{_SHARED}.down_proj.weight", 1, role="in"),
        ),
        observe=Observation((f"{_SHARED}.down_proj",), at="input"),
        layer_kinds=moe,
        module_attributes=((_SHARED, "intermediate_size", lambda c: c.moe_shared_expert_intermediate_size),),
    )
    return expert_neurons, experts, shared


def _moe_hidden_slices() -> tuple[TensorSlice, ...]:
    """What a MoE block reads and writes of the residual stream: experts, router, shared expert."""
    p, moe = "model.layers.*.", (MOE,)
    return (
        TensorSlice(f"{p}{_E}.up_proj", 2, role="in", layer_kinds=moe),
        TensorSlice(f"{p}{_E}.down_proj", 1, layer_kinds=moe),
        TensorSlice(f"{p}{_ROUTER}.weight", 1, role="in", layer_kinds=moe),
        TensorSlice(f"{p}{_SHARED}.up_proj.weight", 1, role="in", layer_kinds=moe),
        TensorSlice(f"{p}{_SHARED}.down_proj.weight", 0, layer_kinds=moe),
        TensorSlice(f"{p}{_SHARED}.down_proj.bias", 0, layer_kinds=moe),
    )


NEMOTRON_H = register(
    ArchitectureSpec(
        model_types=("nemotron_h",),
        groups=(
            *with_layer_kinds(
                decoder_groups(
                    embed_path="model.embeddings",
                    final_norm_path="model.norm_f",
                    attention="mixer",
                    mlp="mixer",
                    gate_proj=None,
                    layer_norms=("norm",),
                    extra_hidden_slices=(
                        *mamba2_hidden_slices("model.layers", "mixer", (MAMBA,)),
                        *_moe_hidden_slices(),
                    ),
                ),
                {
                    **dict.fromkeys(
                        ("mixer.q_proj", "mixer.k_proj", "mixer.v_proj", "mixer.o_proj"), (ATTENTION,)
                    ),
                    **dict.fromkeys(("mixer.up_proj", "mixer.down_proj"), (MLP,)),
                },
            ),
            mamba2_heads("mixer", (MAMBA,)),
            *_moe_groups(),
        ),
        embed_path="model.embeddings",
        final_norm_path="model.norm_f",
        per_layer_config_lists=("layers_block_type",),
        layer_kind_key="layers_block_type",
        supported_layer_kinds=(MAMBA, ATTENTION, MLP, MOE),
        fixed_keys=("n_groups", "n_group"),
        unsupported_nonzero_keys=("moe_latent_size",),
        module_size_attributes=(
            ("num_experts", "num_local_experts"),
            ("intermediate_dim", "moe_intermediate_size"),
            ("hidden_dim", "hidden_size"),
        ),
        notes=(
            "num_hidden_layers is derived from layers_block_type (sliced when dropping layers). MoE blocks "
            "(Nemotron 3 Nano): experts are kept per routing group (n_group kept, like the Mamba groups); a latent "
            "MoE projection (moe_latent_size) is refused."
        ),
    )
)
