"""Llama and the families with exactly its layout: Mistral, Granite."""

from hf_minitron.architectures.spec import ArchitectureSpec, register

LLAMA = register(
    ArchitectureSpec(
        model_types=("llama", "mistral", "granite"),
        notes=(
            "Granite's embedding/residual/attention multipliers and logits_scaling are scalars that do not "
            "depend on any size, so they carry over unchanged. Mistral's sliding_window is global."
        ),
    )
)
