"""Nemotron-H: hybrid blocks of one `mixer` each (Mamba-2, attention or ungated MLP) behind one RMSNorm."""

from hf_minitron.architectures.layout import decoder_groups, with_layer_kinds
from hf_minitron.architectures.mamba import mamba2_heads, mamba2_hidden_slices
from hf_minitron.architectures.spec import ArchitectureSpec, register

MAMBA, ATTENTION, MLP = "linear_attention", "full_attention", "mlp"

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
                    extra_hidden_slices=mamba2_hidden_slices("model.layers", "mixer", (MAMBA,)),
                ),
                {
                    **dict.fromkeys(
                        ("mixer.q_proj", "mixer.k_proj", "mixer.v_proj", "mixer.o_proj"), (ATTENTION,)
                    ),
                    **dict.fromkeys(("mixer.up_proj", "mixer.down_proj"), (MLP,)),
                },
            ),
            mamba2_heads("mixer", (MAMBA,)),
        ),
        embed_path="model.embeddings",
        final_norm_path="model.norm_f",
        per_layer_config_lists=("layers_block_type",),
        layer_kind_key="layers_block_type",
        supported_layer_kinds=(MAMBA, ATTENTION, MLP),
        fixed_keys=("n_groups",),
        notes=(
            "num_hidden_layers is derived from layers_block_type (sliced when dropping layers); MoE blocks "
            "(Nemotron 3 Nano) are refused until the MoE axes land."
        ),
    )
)
