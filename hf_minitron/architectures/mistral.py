"""Mistral 3 (Ministral 3 text under a vision-language wrapper)."""

from hf_minitron.architectures.dimensions import TensorSlice
from hf_minitron.architectures.layout import decoder_groups
from hf_minitron.architectures.spec import ArchitectureSpec, register

_TEXT = "model.language_model"
_PROJECTOR = "model.multi_modal_projector"
MISTRAL3 = register(
    ArchitectureSpec(
        model_types=("mistral3",),
        groups=decoder_groups(
            layers_path=f"{_TEXT}.layers",
            embed_path=f"{_TEXT}.embed_tokens",
            final_norm_path=f"{_TEXT}.norm",
            # the projector writes the hidden size (linear_2 rows) and its inner width is the hidden size too
            extra_hidden_slices=(
                TensorSlice(f"{_PROJECTOR}.linear_2.weight", 0),
                TensorSlice(f"{_PROJECTOR}.linear_2.bias", 0),
                TensorSlice(f"{_PROJECTOR}.linear_2.weight", 1, role="in"),
                TensorSlice(f"{_PROJECTOR}.linear_1.weight", 0),
                TensorSlice(f"{_PROJECTOR}.linear_1.bias", 0),
            ),
        ),
        layers_path=f"{_TEXT}.layers",
        embed_path=f"{_TEXT}.embed_tokens",
        final_norm_path=f"{_TEXT}.norm",
        auto_class="AutoModelForImageTextToText",
        notes="The projector's inner width is config-tied to the text hidden size, so it keeps the same channels.",
    )
)
