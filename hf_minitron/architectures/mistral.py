"""Mistral 3 (Ministral 3 text under a vision-language wrapper)."""

from hf_minitron.architectures.dimensions import TensorSlice
from hf_minitron.architectures.layout import decoder_groups, text_model_paths
from hf_minitron.architectures.spec import ArchitectureSpec, register

_TEXT = text_model_paths("model.language_model")
_PROJECTOR = "model.multi_modal_projector"
MISTRAL3 = register(
    ArchitectureSpec(
        model_types=("mistral3",),
        groups=decoder_groups(
            **_TEXT,
            # the projector writes the hidden size (linear_2 rows) and its inner width is the hidden size too
            extra_hidden_slices=(
                TensorSlice(f"{_PROJECTOR}.linear_2.weight", 0),
                TensorSlice(f"{_PROJECTOR}.linear_2.bias", 0),
                TensorSlice(f"{_PROJECTOR}.linear_2.weight", 1, role="in"),
                TensorSlice(f"{_PROJECTOR}.linear_1.weight", 0),
                TensorSlice(f"{_PROJECTOR}.linear_1.bias", 0),
            ),
        ),
        **_TEXT,
        auto_class="AutoModelForImageTextToText",
        notes="The projector's inner width is config-tied to the text hidden size, so it keeps the same channels.",
    )
)
