"""Memory-efficient logit distillation from final hidden states.

Both models' output heads are applied to a chunk of positions at a time; the student's gradient for that chunk
(with respect to its hidden states, head weight and bias) is computed right away, inside the forward, in closed
form (`losses.divergence_and_grad`), and kept until backward, which only scales it. At most one chunk of ``[chunk_size, vocab]`` logits exists at any time: no full-vocabulary tensor
for the whole batch, for either model (the full student logits are never needed, not even in backward).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .losses import divergence, divergence_and_grad, topk_forward_kl_and_grad

# Elements of one [chunk, vocab] float32 buffer when `distill_chunk_size` is not given (128 MiB).
DEFAULT_CHUNK_ELEMENTS = 2**25


@dataclass
class LogitHead:
    """How a model turns final (post-norm) hidden states into logits.

    Args:
        weight (`torch.Tensor` of shape `[V, H]`): the output embedding (`lm_head`) weight.
        bias (`torch.Tensor` of shape `[V]` or None): its bias, if any.
        scale (`float`, defaults to 1.0): logits are multiplied by it (Granite's 1 / logits_scaling).
        softcap (`float` or None): when set, logits become `softcap * tanh(logits / softcap)` (Gemma 2).
        vocab (`int` or None): keep only the first `vocab` rows (for a padded vocabulary).
        tied (`bool`, defaults to False): the weight is also the input embedding's (it gets a second gradient in the
            same backward; DeepSpeed ZeRO-3 must reduce it only after that one).
    """

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    scale: float = 1.0
    softcap: float | None = None
    vocab: int | None = None
    tied: bool = False

    def raw(self, hidden: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        """`hidden @ weight.T + bias` for the kept vocabulary rows (no scaling or capping)."""
        weight = self.weight if weight is None else weight
        bias = self.bias if bias is None else bias
        if self.vocab is not None:
            weight = weight[: self.vocab]
            bias = None if bias is None else bias[: self.vocab]
        return F.linear(hidden.to(weight.dtype), weight, bias)

    def transform(self, raw_logits: torch.Tensor) -> torch.Tensor:
        """Scaling and soft-capping, in float32."""
        logits = raw_logits.float()
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def chain_grad(self, grad: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Turn d loss / d `logits` (the `transform` output) into d loss / d raw logits, in place."""
        if self.softcap is not None:  # d/dx cap * tanh(x / cap) = 1 - tanh**2, and tanh = logits / cap
            grad.mul_(1 - (logits / self.softcap).square())
        if self.scale != 1.0:
            grad.mul_(self.scale)
        return grad

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits `[N, V]` for hidden states `[N, H]`."""
        return self.transform(self.raw(hidden))

    def gathered(self) -> contextlib.AbstractContextManager:
        """Inside it, a DeepSpeed ZeRO-3-partitioned weight and bias hold their full values (gathered read-only, as
        ZeRO-3's own forward of the head would; partitioned again on exit); a no-op for any other tensor.

        The chunk loop needs the weight only in forward: its gradient is built there in closed form and handed to
        the gathered parameter in backward (`_zero3_accumulate`).
        """
        params = [t for t in (self.weight, self.bias) if t is not None and hasattr(t, "ds_id")]
        if not params:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


class _ChunkedDistillation(torch.autograd.Function):
    """The chunk loop; `target(start, stop, student_logits, need_grad)` gives `(divergence [c], grad or None, lse)`."""

    @staticmethod
    def forward(ctx, s_hidden, s_weight, s_bias, labels, s_head, target, opts):
        temperature, chunk_size, distill_weight, lm_weight, grad_enabled = opts
        # needs_input_grad stays true under no_grad when the inputs require grad: also ask the caller's grad mode.
        need_h, need_w, need_b = (grad_enabled and need for need in ctx.needs_input_grad[:3])
        # A ZeRO-3 head comes in detached (see _run_chunks): its gradient is still built, and handed over in backward.
        ctx.zero3_head = (s_head.weight, s_head.bias) if hasattr(s_head.weight, "ds_id") else None
        ctx.tied = s_head.tied
        if ctx.zero3_head is not None:
            need_w = grad_enabled and s_head.weight.requires_grad
            need_b = grad_enabled and s_head.bias is not None and s_head.bias.requires_grad
        need_any = need_h or need_w or need_b
        n, vocab = s_hidden.shape[0], s_weight.shape[0] if s_head.vocab is None else s_head.vocab
        grad_h = torch.zeros_like(s_hidden) if need_h else None
        grad_w = torch.zeros_like(s_weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(s_bias, dtype=torch.float32) if need_b else None
        d_sum = torch.zeros((), dtype=torch.float32, device=s_hidden.device)
        ce_sum = torch.zeros_like(d_sum)
        for start in range(0, n, chunk_size):
            h = s_hidden[start : start + chunk_size]
            s_logits = s_head.transform(s_head.raw(h, s_weight, s_bias))
            d, g, lse = target(start, start + h.shape[0], s_logits, need_any)
            if g is not None:
                g.mul_(distill_weight)
            d_sum += d.sum()
            if labels is not None:
                y = labels[start : start + chunk_size, None]
                if lse is None or temperature != 1:
                    lse = torch.logsumexp(s_logits, dim=-1)
                lse = lse[:, None]
                ce_sum += (lse - s_logits.gather(1, y)).sum()
                if need_any and lm_weight:  # d CE / d logits = softmax - one_hot
                    g.add_(
                        s_logits.sub(lse).exp_().scatter_add_(1, y, torch.full_like(lse, -1.0)),
                        alpha=lm_weight,
                    )
            if not need_any:
                continue
            s_head.chain_grad(g, s_logits)  # through soft-capping and scaling, back to the raw head output
            del s_logits
            w = s_weight[:vocab]
            if need_h:
                grad_h[start : start + chunk_size] = (g.to(w.dtype) @ w).to(grad_h.dtype)
            if need_w:
                grad_w[:vocab].addmm_(g.t(), h.float())
            if need_b:
                grad_b[:vocab] += g.sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.weight_dtype = s_weight.dtype
        total = distill_weight * d_sum + lm_weight * ce_sum
        ctx.mark_non_differentiable(d_sum, ce_sum)
        return total, d_sum, ce_sum

    @staticmethod
    def backward(ctx, grad_total, _grad_d, _grad_ce):
        # Scaled in place: these buffers are as large as the head weight (a second backward raises).
        grad_h, grad_w, grad_b = ctx.saved_tensors
        if grad_h is not None:
            grad_h = grad_h.mul_(grad_total.to(grad_h.dtype))
        if grad_w is not None:
            grad_w = grad_w.mul_(grad_total).to(ctx.weight_dtype)
        if grad_b is not None:
            grad_b = grad_b.mul_(grad_total).to(ctx.weight_dtype)
        if ctx.zero3_head is not None:  # ZeRO-3: handed to the gathered parameters here, not through autograd
            _zero3_accumulate(ctx.zero3_head, (grad_w, grad_b), ctx.tied)
            grad_w = grad_b = None
        return grad_h, grad_w, grad_b, None, None, None, None


def _zero3_accumulate(params: tuple, grads: tuple, tied: bool = False) -> None:
    """Accumulate full-size gradients into ZeRO-3-partitioned parameters the way ZeRO-3 expects them.

    ZeRO-3 takes a parameter's gradient while the parameter is gathered (it gathers a module's parameters again for
    its backward); the head was read outside its module, so it is gathered here and the gradients are accumulated by
    a nested backward from the parameters themselves, which runs ZeRO-3's gradient hooks (reduce-scatter into each
    rank's partition) as reentrant activation checkpointing does. A head tied to the input embedding gets its second
    gradient later in the same backward: ZeRO-3 is told (`ds_grad_is_ready`, as DeepSpeed's own tiled logits loss
    does) to keep the sum and reduce it then.
    """
    import deepspeed

    pairs = [(p, g) for p, g in zip(params, grads) if p is not None and g is not None and p.requires_grad]
    if not pairs:
        return
    if tied:
        pairs[0][0].ds_grad_is_ready = False
    try:
        with deepspeed.zero.GatheredParameters([p for p, _ in pairs], modifier_rank=None):
            torch.autograd.backward([p for p, _ in pairs], [g for _, g in pairs])
    finally:
        if tied:
            pairs[0][0].ds_grad_is_ready = True


def _run_chunks(
    student_hidden, student_head, labels, target, temperature, distill_weight, lm_weight, chunk_size
):
    with student_head.gathered():  # a ZeRO-3 head: full in forward (its shape included), partitioned after
        vocab = student_head.vocab or student_head.weight.shape[0]
        # At least 8 chunks, so the chunk buffers stay well below a full-logits tensor even for short batches.
        chunk_size = chunk_size or max(
            1, min(DEFAULT_CHUNK_ELEMENTS // vocab, -(-student_hidden.shape[0] // 8))
        )
        # Read here: inside autograd.Function.forward grad mode is always off.
        opts = (
            float(temperature),
            int(chunk_size),
            float(distill_weight),
            float(lm_weight),
            torch.is_grad_enabled(),
        )
        weight, bias = student_head.weight, student_head.bias
        if hasattr(weight, "ds_id"):  # not an autograd input: ZeRO-3 would reduce its (stale) gradient twice
            weight, bias = weight.detach(), None if bias is None else bias.detach()
        return _ChunkedDistillation.apply(student_hidden, weight, bias, labels, student_head, target, opts)


def chunked_distillation_loss(
    student_hidden: torch.Tensor,
    student_head: LogitHead,
    teacher_hidden: torch.Tensor,
    teacher_head: LogitHead,
    labels: torch.Tensor | None = None,
    *,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    distill_weight: float = 1.0,
    lm_weight: float = 0.0,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed logit losses over positions, computed chunk by chunk from final hidden states.

    Args:
        student_hidden (`torch.Tensor` of shape `[N, Hs]`): student final hidden states of the positions that count.
        student_head (`LogitHead`): the student's output head; gradients flow to its weight and bias.
        teacher_hidden (`torch.Tensor` of shape `[N, Ht]`): teacher final hidden states of the same positions.
        teacher_head (`LogitHead`): the teacher's output head (no gradient).
        labels (`torch.LongTensor` of shape `[N]` or None): next-token targets for the cross-entropy term.
        loss (`str`, defaults to "forward_kl"): "forward_kl", "reverse_kl" or "jsd" (see `losses.py`).
        temperature (`float`, defaults to 1.0): divergence at this temperature, times temperature**2.
        distill_weight (`float`, defaults to 1.0), lm_weight (`float`, defaults to 0.0): weights in the total.
        chunk_size (`int` or None): positions per chunk; None picks min(`DEFAULT_CHUNK_ELEMENTS // V`, N / 8).

    Returns:
        `(total, distill_sum, lm_sum)`: float32 scalars; only `total = distill_weight * distill_sum +
        lm_weight * lm_sum` carries gradients. `lm_sum` is 0 when `labels` is None.
    """
    teacher_hidden = teacher_hidden.detach()

    def target(start, stop, s_logits, need_grad):
        t_logits = teacher_head.logits(teacher_hidden[start:stop])
        if need_grad:
            return divergence_and_grad(loss, s_logits, t_logits, temperature)
        return divergence(loss, s_logits, t_logits, temperature), None, None

    with teacher_head.gathered():
        return _run_chunks(
            student_hidden, student_head, labels, target, temperature, distill_weight, lm_weight, chunk_size
        )


def chunked_topk_distillation_loss(
    student_hidden: torch.Tensor,
    student_head: LogitHead,
    topk_logprobs: torch.Tensor,
    topk_indices: torch.Tensor,
    rest_logprob: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    distill_weight: float = 1.0,
    lm_weight: float = 0.0,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`chunked_distillation_loss` against stored teacher top-k log-probabilities (forward KL, temperature 1).

    Args:
        student_hidden (`torch.Tensor` of shape `[N, Hs]`), student_head (`LogitHead`): as in
            `chunked_distillation_loss`.
        topk_logprobs (`torch.Tensor` of shape `[N, k]`), topk_indices (`torch.LongTensor` of shape `[N, k]`),
        rest_logprob (`torch.Tensor` of shape `[N]`): the teacher's stored distribution (`losses.topk_forward_kl`).
        labels, distill_weight, lm_weight, chunk_size: as in `chunked_distillation_loss`.

    Returns:
        `(total, distill_sum, lm_sum)` as in `chunked_distillation_loss`.
    """

    def target(start, stop, s_logits, need_grad):
        stored = (topk_logprobs[start:stop], topk_indices[start:stop], rest_logprob[start:stop])
        d, g, lse = topk_forward_kl_and_grad(s_logits, *stored, need_grad=need_grad)
        return d, g, lse

    return _run_chunks(
        student_hidden, student_head, labels, target, 1.0, distill_weight, lm_weight, chunk_size
    )
