"""Bamba: Mamba-2 or attention per layer (`attn_layer_indices`), then a gated MLP in every layer."""

from hf_minitron.architectures.layout import decoder_groups, with_layer_kinds
from hf_minitron.architectures.mamba import mamba2_heads, mamba2_hidden_slices
from hf_minitron.architectures.spec import ArchitectureSpec, register

MAMBA, ATTENTION = "linear_attention", "full_attention"

BAMBA = register(
    ArchitectureSpec(
        model_types=("bamba",),
        groups=(
            *with_layer_kinds(
                decoder_groups(
                    final_norm_path="model.final_layernorm",
                    mlp="feed_forward",
                    layer_norms=("input_layernorm", "pre_ff_layernorm"),
                    extra_hidden_slices=mamba2_hidden_slices("model.layers", "mamba", (MAMBA,)),
                ),
                {"self_attn": (ATTENTION,)},
            ),
            mamba2_heads(
                "mamba",
                (MAMBA,),
                heads_key="mamba_n_heads",
                groups_key="mamba_n_groups",
                head_dim_key="mamba_d_head",
                state_key="mamba_d_state",
            ),
        ),
        final_norm_path="model.final_layernorm",
        per_layer_config_lists=(),
        layer_index_lists=("attn_layer_indices",),
        layer_kind_key="layers_block_type",
        supported_layer_kinds=(MAMBA, ATTENTION),
        fixed_keys=("mamba_n_groups",),
        inner_width_tie=("mamba_n_heads", "mamba_d_head", "mamba_expand"),
        notes=(
            "layers_block_type is derived from attn_layer_indices (remapped when dropping layers); the config "
            "requires mamba_n_heads * mamba_d_head == mamba_expand * hidden_size, so Mamba heads go with the hidden "
            "size."
        ),
    )
)
