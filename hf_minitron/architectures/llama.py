"""Llama and the families with exactly its layout."""

from hf_minitron.architectures.spec import ArchitectureSpec, register

LLAMA = register(
    ArchitectureSpec(
        model_types=("llama", "mistral", "ministral3", "granite", "seed_oss", "ernie4_5"),
        notes=(
            "Granite's embedding/residual/attention multipliers and logits_scaling are scalars that do not "
            "depend on any size, so they carry over unchanged. Mistral's sliding_window is global. Seed-OSS "
            "carries q/k/v biases (sliced with their rows)."
        ),
    )
)
HELIUM = register(
    ArchitectureSpec(
        model_types=("helium",), heads_span_hidden=True, notes="o_proj is built hidden_size x hidden_size."
    )
)
