"""Gemma, Gemma 2 and Gemma 3: (1 + weight) RMSNorms, embeddings scaled by sqrt(hidden_size), sandwich norms."""

from hf_minitron.architectures.dimensions import TensorSlice
from hf_minitron.architectures.layout import decoder_groups, text_model_paths
from hf_minitron.architectures.spec import ArchitectureSpec, register

_COMMON = dict(
    norm_weight_offset=1.0,
    # Gemma 3 270M to half its parameters (benchmarks/real_models/norm_rescale.py, bf16), held-out loss right after
    # pruning with the norm rescale off / fixed sqrt(old/new) / data-aware: activation importance 14.50 / 16.31 /
    # 14.33, magnitude 13.80 / 17.11 / 16.65; hidden 640 -> 384 alone, activation 12.60 / 14.60 / 13.68: stays off
    rescale_norms=False,
    embed_scale_from_hidden_size=True,
    embed_scale_attributes=("embed_scale", "scalar_embed_scale"),
)
_SANDWICH = (
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
)

GEMMA = register(ArchitectureSpec(model_types=("gemma",), **_COMMON))
GEMMA2 = register(
    ArchitectureSpec(
        model_types=("gemma2", "gemma3_text"),
        groups=decoder_groups(layer_norms=_SANDWICH),
        notes=(
            "layer_types alternate sliding/full attention; query_pre_attn_scalar and softcaps do not depend on "
            "sizes; Gemma 3's q/k norms are over head_dim, which pruning keeps."
        ),
        **_COMMON,
    )
)
_TEXT = text_model_paths("model.language_model")
GEMMA3 = register(
    ArchitectureSpec(
        model_types=("gemma3",),
        groups=decoder_groups(
            **_TEXT,
            layer_norms=_SANDWICH,
            # the vision features are projected into the hidden size: its columns go with the channels
            extra_hidden_slices=(TensorSlice("model.multi_modal_projector.mm_input_projection_weight", 1),),
        ),
        **_TEXT,
        auto_class="AutoModelForImageTextToText",
        notes="Composite vision-language checkpoint: the text part is pruned, the vision tower is kept.",
        **_COMMON,
    )
)
