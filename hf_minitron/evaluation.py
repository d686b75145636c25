"""Held-out perplexity from the model's own loss, and lm-evaluation-harness tasks when it is installed."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["evaluate_perplexity", "perplexity_on_blocks", "run_lm_eval"]


@torch.no_grad()
def perplexity_on_blocks(
    model: Any, blocks: torch.Tensor, batch_size: int = 8, progress: bool = True, desc: str = "eval"
) -> dict[str, float]:
    """LM loss and perplexity of `model` on token blocks `[num_blocks, seq_len]`.

    Uses the model's own loss (`labels=input_ids`, so the shift and the loss are exactly what the model
    trains with) and weights each batch by the number of predicted tokens, so the result is the mean over
    all predicted tokens.

    Returns:
        `dict` with `loss`, `perplexity`, `tokens` (predicted tokens) and `blocks`.
    """
    from tqdm.auto import tqdm

    if len(blocks) == 0:
        raise ValueError("no evaluation blocks: the held-out text is shorter than one block")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    starts = range(0, len(blocks), batch_size)
    for i in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
        batch = blocks[i : i + batch_size].to(device)
        loss = model(input_ids=batch, labels=batch).loss.float().item()
        n = batch.numel() - batch.shape[0]
        total += loss * n
        count += n
    if was_training:
        model.train()
    mean = total / count
    return {"loss": mean, "perplexity": math.exp(min(mean, 700.0)), "tokens": count, "blocks": len(blocks)}


def evaluate_perplexity(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    seq_len: int = 2048,
    batch_size: int = 8,
    max_blocks: int | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Perplexity on held-out documents: packed into blocks of `seq_len` tokens (EOS between documents)."""
    from hf_minitron.data import tokenize_and_pack

    blocks = tokenize_and_pack(texts, tokenizer, seq_len)
    if max_blocks is not None:
        blocks = blocks[:max_blocks]
    return perplexity_on_blocks(model, blocks, batch_size=batch_size, progress=progress)


def run_lm_eval(
    model: Any,
    tokenizer: Any,
    tasks: list[str],
    batch_size: int = 8,
    limit: int | None = None,
    num_fewshot: int | None = None,
) -> dict[str, dict[str, float]]:
    """Run lm-evaluation-harness tasks on an in-memory model; `{task: {metric: value}}` (numbers only).

    Raises:
        ImportError: when `lm_eval` is not installed (`pip install hf-minitron[eval]`).
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as e:
        raise ImportError("--tasks needs lm-evaluation-harness: pip install 'hf-minitron[eval]'") from e
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), limit=limit, num_fewshot=num_fewshot)
    results = {}
    for task, metrics in out["results"].items():
        results[task] = {
            k.split(",")[0]: float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and "stderr" not in k and k != "alias"
        }
    return results
