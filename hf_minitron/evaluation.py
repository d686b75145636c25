"""Held-out perplexity from the model's own loss, and lm-evaluation-harness tasks when it is installed."""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import torch

__all__ = ["evaluate_perplexity", "lm_loss_sum", "perplexity_on_blocks", "run_lm_eval"]


@torch.no_grad()
def lm_loss_sum(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy of one batch and the number of predicted tokens (float32 scalars).

    The one LM loss of the library (evaluation, loss-based depth metrics, search ranking). It is computed from the
    final hidden states through the output head a chunk of positions at a time, with the family's logit scaling and
    soft-capping (`distillation.modeling.logit_head`), so no full-vocabulary logits exist for the whole batch.

    Args:
        model (`PreTrainedModel`): a causal LM (or a PEFT wrapper of one).
        input_ids (`torch.LongTensor` of shape `[B, T]`): the tokens.
        attention_mask (`torch.Tensor` of shape `[B, T]`, *optional*): 0 marks padding; position t predicts t + 1
            only when both are real tokens.
        labels (`torch.LongTensor` of shape `[B, T]`, *optional*): targets as a `Trainer` gets them (shifted here,
            -100 ignored); they replace `input_ids` and the mask as targets.
        position_ids (`torch.LongTensor`, *optional*): passed to the model.
        chunk_size (`int`, *optional*): positions per chunk; default `DEFAULT_CHUNK_ELEMENTS // vocab`.
    """
    from hf_minitron.distillation.chunked import DEFAULT_CHUNK_ELEMENTS
    from hf_minitron.distillation.modeling import base_model, decoder, logit_head

    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
    inputs = {k: v for k, v in inputs.items() if v is not None}
    last_hidden = decoder(model)(**inputs, use_cache=False).last_hidden_state
    if model not in _HEAD_CHECKED:
        _check_head(model, inputs, last_hidden[:1, -1])
    hidden = last_hidden[:, :-1]
    if labels is not None:
        targets = labels[:, 1:].to(hidden.device)
        valid = targets != -100
    else:
        targets = input_ids[:, 1:].to(hidden.device)
        valid = torch.ones_like(targets, dtype=torch.bool)
        if attention_mask is not None:
            mask = attention_mask.to(hidden.device).bool()
            valid = mask[:, 1:] & mask[:, :-1]
    states, targets = hidden[valid], targets[valid]
    with _materialized(base_model(model).get_output_embeddings()):
        head = logit_head(model)
        chunk_size = chunk_size or max(1, DEFAULT_CHUNK_ELEMENTS // head.weight.shape[0])
        total = torch.zeros((), dtype=torch.float32, device=head.weight.device)
        for start in range(0, len(targets), chunk_size):
            logits = head.logits(states[start : start + chunk_size].to(head.weight.device))
            y = targets[start : start + chunk_size].to(logits.device)
            total += (torch.logsumexp(logits, dim=-1) - logits.gather(1, y[:, None]).squeeze(1)).sum()
    return total, torch.tensor(float(len(targets)), device=total.device)


# Models whose chunked head was checked against their own forward (once per model object).
_HEAD_CHECKED: weakref.WeakSet = weakref.WeakSet()


def _check_head(model: Any, inputs: dict[str, torch.Tensor], last_state: torch.Tensor) -> None:
    """Refuse a model whose forward turns hidden states into logits otherwise than `lm_head` with the known
    scale and soft-cap (e.g. a multiplier of a family hf-minitron does not know): its loss would be silently wrong.
    One forward of one sequence, keeping the logits of its last position only."""
    from hf_minitron.distillation.modeling import base_model, logit_head

    row = {k: v[:1] for k, v in inputs.items()}
    try:
        expected = model(**row, logits_to_keep=1, use_cache=False).logits[0, -1].float()
    except TypeError:  # a forward without logits_to_keep
        expected = model(**row, use_cache=False).logits[0, -1].float()
    with _materialized(base_model(model).get_output_embeddings()):
        head = logit_head(model)
        got = head.logits(last_state.to(head.weight.device))[0].to(expected.device)
    error = (got - expected).abs().max().item()
    if error > 1e-2 * max(1.0, expected.abs().max().item()):
        raise ValueError(
            f"{type(model).__name__}: lm_head with scale {head.scale} and softcap {head.softcap} does not reproduce "
            f"the model's logits (max difference {error:.3g}): this family transforms its logits in a way "
            "hf-minitron does not know, so its LM loss cannot be computed from hidden states"
        )
    _HEAD_CHECKED.add(model)


@contextlib.contextmanager
def _materialized(module: torch.nn.Module) -> Iterator[None]:
    """A module dispatched by accelerate with offloaded weights (on the meta device) gets them on its execution
    device for the block, as its own forward would (the head is used here without calling its forward)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        yield
        return
    hook.pre_forward(module)
    try:
        yield
    finally:
        hook.post_forward(module, None)


@torch.no_grad()
def perplexity_on_blocks(
    model: Any, blocks: torch.Tensor, batch_size: int = 8, progress: bool = True, desc: str = "eval"
) -> dict[str, float]:
    """LM loss and perplexity of `model` on token blocks `[num_blocks, seq_len]`.

    The mean next-token cross-entropy over all predicted tokens (`lm_loss_sum`: chunked from the final hidden
    states, the same loss the model trains with).

    Returns:
        `dict` with `loss`, `perplexity`, `tokens` (predicted tokens) and `blocks`.
    """
    from tqdm.auto import tqdm

    if len(blocks) == 0:
        raise ValueError("no evaluation blocks: the held-out text is shorter than one block")
    was_training = model.training
    model.eval()
    device = model.get_input_embeddings().weight.device
    total, count = 0.0, 0.0
    starts = range(0, len(blocks), batch_size)
    try:
        for i in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
            loss_sum, n = lm_loss_sum(model, blocks[i : i + batch_size].to(device))
            total += loss_sum.item()
            count += n.item()
    finally:
        model.train(was_training)
    mean = total / max(count, 1.0)
    return {
        "loss": mean,
        "perplexity": math.exp(min(mean, 700.0)),
        "tokens": int(count),
        "blocks": len(blocks),
    }


def evaluate_perplexity(
    model: Any,
    tokenizer: Any,
    texts: Iterable[str],
    seq_len: int = 2048,
    batch_size: int = 8,
    max_blocks: int | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Perplexity on held-out documents (a list or a stream, read only up to `max_blocks` blocks): packed into
    blocks of `seq_len` tokens (EOS between documents)."""
    from hf_minitron.data import tokenize_and_pack

    blocks = tokenize_and_pack(texts, tokenizer, seq_len, max_blocks)
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
