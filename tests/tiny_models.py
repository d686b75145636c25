"""Tiny randomly initialized causal LMs, one per supported architecture, built offline from configs."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

# Shared shape: 4 layers, hidden 64, MLP 128, 8 query heads in 4 KV groups (GQA), head_dim 8.
BASE = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=8,
    max_position_embeddings=256,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)

# One line per architecture: what that family needs beyond BASE.
ARCH_OVERRIDES: dict[str, dict] = {
    "llama": dict(tie_word_embeddings=False),
    "mistral": dict(sliding_window=None, tie_word_embeddings=False),
    "qwen2": dict(tie_word_embeddings=True),
    "qwen3": dict(tie_word_embeddings=True),
    "gemma": dict(),
    "gemma2": dict(sliding_window=16),
    "nemotron": dict(tie_word_embeddings=False, partial_rotary_factor=0.5),
    "granite": dict(
        embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.2, logits_scaling=4.0
    ),
}

ARCHITECTURES = sorted(ARCH_OVERRIDES)


def tiny_config(model_type: str, **overrides):
    """Config of a tiny model of this family; overrides win over the defaults."""
    return AutoConfig.for_model(model_type, **{**BASE, **ARCH_OVERRIDES[model_type], **overrides})


def tiny_model(model_type: str = "llama", seed: int = 0, **overrides):
    """A tiny float32 model in eval mode with a fixed random init."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, **overrides), dtype=torch.float32)
    return model.eval()


def random_batches(
    n: int = 3,
    batch_size: int = 2,
    seq_len: int = 16,
    vocab_size: int = 128,
    seed: int = 0,
    pad_last: int = 0,
):
    """Calibration batches of random token ids; the last `pad_last` positions of row 0 are padding."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        ids = torch.randint(3, vocab_size, (batch_size, seq_len), generator=g)
        mask = torch.ones_like(ids)
        if pad_last:
            ids[0, -pad_last:] = 0
            mask[0, -pad_last:] = 0
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches
