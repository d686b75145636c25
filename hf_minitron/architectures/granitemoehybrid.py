"""Granite 4 (granitemoehybrid): Mamba-2 or attention per layer, then a fused [gate | up] shared MLP, plus routed
experts in every layer when `num_local_experts > 0` (dense Granite 4 has none)."""

from dataclasses import replace

from hf_minitron.architectures.dimensions import DimensionGroup, Observation, Segment, TensorSlice
from hf_minitron.architectures.layout import decoder_groups, with_layer_kinds
from hf_minitron.architectures.mamba import mamba2_heads, mamba2_hidden_slices
from hf_minitron.architectures.spec import ArchitectureSpec, register

MAMBA, ATTENTION = "linear_attention", "full_attention"
_E, _ROUTER = "block_sparse_moe.experts", "block_sparse_moe.router"


def _expert_groups() -> tuple[DimensionGroup, ...]:
    """Expert neurons ([E, 2I, H] with [gate | up] rows, [E, H, I]) and experts with their router rows; optional:
    a dense Granite 4 has no experts. Expert neurons first: their kept sets index the experts before any is dropped."""
    expert_neurons = DimensionGroup(
        name="expert_neurons",
        config_keys=("intermediate_size",),
        unit="one neuron of every routed expert (the same count in each, ranked per expert)",
        scope="layer",
        slices=(
            TensorSlice(f"{_E}.gate_up_proj", 1, (Segment(), Segment()), block_dim=0, optional=True),
            TensorSlice(f"{_E}.down_proj", 2, role="in", block_dim=0, optional=True),
        ),
        observe=Observation((_E,), at="experts", optional=True),
        within="num_local_experts",
    )
    experts = DimensionGroup(
        name="experts",
        config_keys=("num_local_experts",),
        unit="one routed expert (its fused tensors and its router row)",
        scope="layer",
        slices=tuple(
            TensorSlice(path, 0, optional=True)
            for path in (f"{_E}.gate_up_proj", f"{_E}.down_proj", f"{_ROUTER}.weight")
        ),
        observe=Observation((_E,), at="experts", optional=True),
        lower_bound="num_experts_per_tok",
    )
    return expert_neurons, experts


def _groups():
    every = "model.layers.*."
    neurons, heads, channels = with_layer_kinds(
        decoder_groups(
            mlp="shared_mlp",
            gate_up_proj="input_linear",
            down_proj="output_linear",
            extra_hidden_slices=(
                *mamba2_hidden_slices("model.layers", "mamba", (MAMBA,)),
                TensorSlice(f"{every}{_E}.gate_up_proj", 2, role="in", optional=True),
                TensorSlice(f"{every}{_E}.down_proj", 1, optional=True),
                TensorSlice(f"{every}{_ROUTER}.weight", 1, role="in", optional=True),
            ),
        ),
        {"self_attn": (ATTENTION,)},
    )
    neurons = replace(
        neurons,
        config_keys=("shared_intermediate_size",),
        unit="one neuron of the shared MLP",
        # the shared MLP caches its width as `hidden_size` and splits [gate | up] with it
        module_attributes=(("shared_mlp", "hidden_size", lambda c: c.shared_intermediate_size),),
    )
    mamba = mamba2_heads(
        "mamba",
        (MAMBA,),
        heads_key="mamba_n_heads",
        groups_key="mamba_n_groups",
        head_dim_key="mamba_d_head",
        state_key="mamba_d_state",
    )
    return (neurons, *_expert_groups(), heads, channels, mamba)


GRANITE_MOE_HYBRID = register(
    ArchitectureSpec(
        model_types=("granitemoehybrid",),
        groups=_groups(),
        per_layer_config_lists=("layer_types",),
        layer_kind_key="layer_types",
        supported_layer_kinds=(MAMBA, ATTENTION),
        fixed_keys=("mamba_n_groups",),
        inner_width_tie=("mamba_n_heads", "mamba_d_head", "mamba_expand"),
        module_size_attributes=(
            ("num_experts", "num_local_experts"),
            ("intermediate_dim", "intermediate_size"),
            ("hidden_dim", "hidden_size"),
            ("input_size", "hidden_size"),  # the MoE block and the shared MLP reshape with it
        ),
        notes=(
            "The config requires mamba_n_heads * mamba_d_head == mamba_expand * hidden_size, so Mamba heads go with "
            "the hidden size; routed experts (num_local_experts > 0, sized by intermediate_size) sit next to the "
            "shared MLP (shared_intermediate_size) in every layer."
        ),
    )
)
