"""Nemotron-H: hybrid blocks of one `mixer` each (Mamba-2, attention or ungated MLP) behind one RMSNorm."""

from hf_minitron.architectures.dimensions import DimensionGroup, Observation, Segment, TensorSlice
from hf_minitron.architectures.layout import decoder_groups, with_layer_kinds
from hf_minitron.architectures.spec import ArchitectureSpec, register

MAMBA, ATTENTION, MLP = "linear_attention", "full_attention", "mlp"

_HEAD = Segment("query", "mamba_head_dim")  # one SSM head's channels (z, x, the gated norm, out_proj columns)
_GROUP = Segment("kv", "ssm_state_size")  # B or C of one group: kept whole while n_groups is kept
_PER_HEAD = Segment("query", 1)  # dt, dt_bias, A_log, D


def _inner(config) -> int:
    return config.mamba_num_heads * config.mamba_head_dim


def mamba2_heads(mixer: str = "mixer", layer_kinds: tuple[str, ...] = (MAMBA,)) -> DimensionGroup:
    """Mamba-2 SSM heads: `in_proj` rows [z | x | B | C | dt], depthwise `conv1d` channels [x | B | C], per-head
    `dt_bias`, `A_log`, `D`, the grouped gated RMSNorm (statistic per group of heads), `out_proj` columns. Heads
    are chosen like GQA query heads with `n_groups` as the KV groups, so every group keeps the same count and its
    B/C (a group's heads share them)."""
    m = mixer
    in_proj = (_HEAD, _HEAD, _GROUP, _GROUP, _PER_HEAD)
    conv = (_HEAD, _GROUP, _GROUP)
    return DimensionGroup(
        name="mamba_heads",
        config_keys=("mamba_num_heads", "n_groups"),
        unit="one Mamba-2 SSM head of mamba_head_dim channels (n_groups kept; the same heads in every group)",
        scope="layer",
        slices=(
            TensorSlice(f"{m}.in_proj.weight", 0, in_proj),
            TensorSlice(f"{m}.in_proj.bias", 0, in_proj),
            TensorSlice(f"{m}.conv1d.weight", 0, conv),
            TensorSlice(f"{m}.conv1d.bias", 0, conv),
            TensorSlice(f"{m}.dt_bias", 0, (_PER_HEAD,)),
            TensorSlice(f"{m}.A_log", 0, (_PER_HEAD,)),
            TensorSlice(f"{m}.D", 0, (_PER_HEAD,)),
            # the gated norm's statistic spans a group's heads; n_groups is kept, so old / new width is per group
            TensorSlice(f"{m}.norm.weight", 0, (_HEAD,), rms_width=True),
            TensorSlice(f"{m}.out_proj.weight", 1, (_HEAD,), role="in"),
        ),
        observe=Observation((f"{m}.out_proj",), at="input", rows="mamba_head_dim"),
        selection="gqa",
        search_step="gqa",
        layer_kinds=layer_kinds,
        module_attributes=(
            (m, "num_heads", lambda c: c.mamba_num_heads),
            (m, "intermediate_size", _inner),
            (m, "conv_dim", lambda c: _inner(c) + 2 * c.n_groups * c.ssm_state_size),
            (f"{m}.norm", "group_size", lambda c: _inner(c) // c.n_groups),
        ),
    )


_MAMBA_HIDDEN = (
    TensorSlice("model.layers.*.mixer.in_proj.weight", 1, role="in"),
    TensorSlice("model.layers.*.mixer.out_proj.weight", 0),
    TensorSlice("model.layers.*.mixer.out_proj.bias", 0),
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
                    extra_hidden_slices=_MAMBA_HIDDEN,
                ),
                {
                    **dict.fromkeys(
                        ("mixer.q_proj", "mixer.k_proj", "mixer.v_proj", "mixer.o_proj"), (ATTENTION,)
                    ),
                    **dict.fromkeys(("mixer.up_proj", "mixer.down_proj"), (MLP,)),
                    **dict.fromkeys(("mixer.in_proj", "mixer.out_proj"), (MAMBA,)),
                },
            ),
            mamba2_heads(),
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
