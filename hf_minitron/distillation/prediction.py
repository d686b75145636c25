"""What DistillationTrainer's evaluation reads besides the loss: the rows of a padded last batch that count, and the
logits `predict(..., return_logits=True)` builds chunk by chunk."""

from __future__ import annotations

import torch

from .chunked import DEFAULT_CHUNK_ELEMENTS


def eval_rows_kept(accelerator, batch_size: int) -> int:
    """How many leading rows of this process's evaluation batch are data: accelerate completes the last global batch
    with repeats of the first samples so every process gets a full batch (`gather_for_metrics` keeps the first
    `remainder` rows of that batch in process order); counting them would weight those samples twice."""
    state, processes = accelerator.gradient_state, accelerator.num_processes
    if processes == 1 or not state.end_of_dataloader or state.remainder <= 0:
        return batch_size
    return max(0, min(batch_size, state.remainder - accelerator.process_index * batch_size))


def chunked_logits(head, hidden: torch.Tensor) -> torch.Tensor:
    """`[..., V]` float32 logits of the final hidden states `[..., H]` through the `LogitHead` `head`, built a few
    rows at a time (a ZeRO-3-partitioned head is gathered whole while they are built)."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    with head.gathered():
        chunk = max(1, DEFAULT_CHUNK_ELEMENTS // head.weight.shape[0])
        logits = torch.cat([head.logits(flat[i : i + chunk]) for i in range(0, flat.shape[0], chunk)])
    return logits.view(*hidden.shape[:-1], -1)
