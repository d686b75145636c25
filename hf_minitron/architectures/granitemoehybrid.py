"""Granite 4 (granitemoehybrid): Mamba-2 or attention per layer, then a fused [gate | up] shared MLP; dense only."""

from dataclasses import replace

from hf_minitron.architectures.layout import decoder_groups, with_layer_kinds
from hf_minitron.architectures.mamba import mamba2_heads, mamba2_hidden_slices
from hf_minitron.architectures.spec import ArchitectureSpec, register

MAMBA, ATTENTION = "linear_attention", "full_attention"


def _groups():
    neurons, heads, channels = with_layer_kinds(
        decoder_groups(
            mlp="shared_mlp",
            gate_up_proj="input_linear",
            down_proj="output_linear",
            extra_hidden_slices=mamba2_hidden_slices("model.layers", "mamba", (MAMBA,)),
        ),
        {"self_attn": (ATTENTION,)},
    )
    neurons = replace(
        neurons,
        config_keys=("shared_intermediate_size",),
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
    return (neurons, heads, channels, mamba)


GRANITE_MOE_HYBRID = register(
    ArchitectureSpec(
        model_types=("granitemoehybrid",),
        groups=_groups(),
        per_layer_config_lists=("layer_types",),
        layer_kind_key="layer_types",
        supported_layer_kinds=(MAMBA, ATTENTION),
        fixed_keys=("mamba_n_groups",),
        inner_width_tie=("mamba_n_heads", "mamba_d_head", "mamba_expand"),
        unsupported_nonzero_keys=("num_local_experts",),
        notes=(
            "The config requires mamba_n_heads * mamba_d_head == mamba_expand * hidden_size, so Mamba heads go with "
            "the hidden size; routed experts (num_local_experts > 0) are refused until the MoE axes land."
        ),
    )
)
