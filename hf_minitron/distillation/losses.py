"""Distillation losses as plain tensor functions (no model, no trainer).

Every function takes logits or hidden states flattened to ``[N, ...]`` (N = positions that count) and returns
the loss per position ``[N]`` in float32, so that callers choose the reduction (sum / number of items).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DISTILL_LOSSES = ("forward_kl", "reverse_kl", "jsd")
HIDDEN_STATE_LOSSES = ("cosine", "mse")


def forward_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(teacher || student) per position, times temperature**2.

    Args:
        student_logits (`torch.Tensor` of shape `[N, V]`): student logits (any float dtype).
        teacher_logits (`torch.Tensor` of shape `[N, V]`): teacher logits.
        temperature (`float`, defaults to 1.0): both distributions are softmax(logits / temperature).

    Returns:
        `torch.Tensor` of shape `[N]`, float32.
    """
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return (t.exp() * (t - s)).sum(-1) * temperature**2


def reverse_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(student || teacher) per position, times temperature**2. Shapes as in `forward_kl`."""
    return forward_kl(teacher_logits, student_logits, temperature)


def jsd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0, beta: float = 0.5
) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence per position, times temperature**2.

    ``beta * KL(teacher || m) + (1 - beta) * KL(student || m)`` with ``m = beta * p_teacher + (1 - beta) * p_student``
    (beta 0.5 is the symmetric JSD). Shapes as in `forward_kl`.
    """
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_m = torch.logaddexp(s + math.log(1 - beta), t + math.log(beta))
    kl_t = (t.exp() * (t - log_m)).sum(-1)
    kl_s = (s.exp() * (s - log_m)).sum(-1)
    return (beta * kl_t + (1 - beta) * kl_s) * temperature**2


def divergence(
    name: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
):
    """Dispatch on `name` (one of `DISTILL_LOSSES`); returns the per-position loss `[N]`."""
    if name == "forward_kl":
        return forward_kl(student_logits, teacher_logits, temperature)
    if name == "reverse_kl":
        return reverse_kl(student_logits, teacher_logits, temperature)
    if name == "jsd":
        return jsd(student_logits, teacher_logits, temperature)
    raise ValueError(f"Unknown distill_loss {name!r}; choose one of {DISTILL_LOSSES}.")


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product of two `[N, V]` tensors without an `[N, V]` temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def divergence_and_grad(
    name: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """`divergence(...)` and its gradient with respect to the student logits, in closed form.

    The same values as `divergence` (tested against it and against autograd), with fewer passes over the
    vocabulary than autograd needs: d/dz of KL(t || s) is p_s - p_t; for a loss L(p_s) in general it is
    p_s * (dL/dp_s - <p_s, dL/dp_s>), which gives reverse KL and JSD.

    Args:
        name (`str`): one of `DISTILL_LOSSES`.
        student_logits (`torch.Tensor` of shape `[N, V]`, float32), teacher_logits (`torch.Tensor` of shape `[N, V]`).
        temperature (`float`, defaults to 1.0).

    Returns:
        `(loss [N], grad [N, V], lse [N])`, float32: the loss times temperature**2 as in `divergence`, and the
        student's log-normalizer logsumexp(student_logits / temperature), for a cross-entropy at no extra pass.
    """
    tau = temperature
    z = student_logits.float() / tau if tau != 1 else student_logits.float()
    ls = F.log_softmax(z, dim=-1)
    lse = z[:, 0] - ls[:, 0]
    lt = F.log_softmax(teacher_logits.float() / tau if tau != 1 else teacher_logits.float(), dim=-1)
    if name == "forward_kl":
        pt = lt.exp()
        loss = _rowdot(pt, lt) - _rowdot(pt, ls)
        grad = ls.exp_().sub_(pt)  # p_s - p_t
    elif name == "reverse_kl":
        ps = ls.exp()
        r = ls.sub_(lt)  # log p_s - log p_t
        loss = _rowdot(ps, r)
        grad = r.sub_(loss[:, None]).mul_(ps)
    elif name == "jsd":  # beta = 0.5: L = (KL(t || m) + KL(s || m)) / 2, dL/dp_s = (log p_s - log m) / 2
        ps, pt = ls.exp(), lt.exp()
        lm = torch.logaddexp(ls, lt).sub_(math.log(2))
        ls.sub_(lm)  # log p_s - log m
        kl_s = _rowdot(ps, ls)
        loss = 0.5 * (kl_s + _rowdot(pt, lt.sub_(lm)))
        grad = ls.sub_(kl_s[:, None]).mul_(ps).mul_(0.5)
    else:
        raise ValueError(f"Unknown distill_loss {name!r}; choose one of {DISTILL_LOSSES}.")
    # z = logits / tau: dL/dlogits = tau**2 * dKL/dz / tau
    return loss * tau**2, grad.mul_(tau), lse


def teacher_topk(teacher_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What an offline teacher stores per position: its top-k log-probabilities and the log of the remaining mass.

    Args:
        teacher_logits (`torch.Tensor` of shape `[N, V]`): the teacher's logits (after any scale / soft-cap).
        k (`int`): how many tokens to keep, 1 <= k <= V.

    Returns:
        `(logprobs [N, k] float32, indices [N, k] int64, rest [N] float32)`; `rest` is log(1 - sum(exp(logprobs))),
        computed as a logsumexp over the other tokens (-inf when k = V).
    """
    lp = F.log_softmax(teacher_logits.float(), dim=-1)
    values, indices = lp.topk(k, dim=-1)
    rest = torch.logsumexp(lp.scatter_(1, indices, float("-inf")), dim=-1)
    return values, indices, rest


def topk_forward_kl_and_grad(
    student_logits: torch.Tensor,
    topk_logprobs: torch.Tensor,
    topk_indices: torch.Tensor,
    rest_logprob: torch.Tensor,
    need_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Forward KL(teacher || student) over the teacher's top-k tokens plus one bucket for all the others.

    The teacher's distribution is its stored top-k probabilities and the remaining mass `exp(rest)`; the student's is
    its probabilities of the same k tokens and the sum of all its other probabilities. With k = V this is the full
    forward KL. The gradient with respect to the student logits z is, for a kept token j, `S * q_j - p_j`, and for
    another token `q_j * (S - p_rest / q_rest)` (S = the stored teacher mass, 1 up to rounding).

    Args:
        student_logits (`torch.Tensor` of shape `[N, V]`): student logits (float32).
        topk_logprobs (`torch.Tensor` of shape `[N, k]`): teacher log-probabilities of its top-k tokens (any float).
        topk_indices (`torch.Tensor` of shape `[N, k]`): their token ids (any integer dtype).
        rest_logprob (`torch.Tensor` of shape `[N]`): log of the teacher's remaining mass (-inf when none).
        need_grad (`bool`, defaults to True): also return the gradient.

    Returns:
        `(loss [N], grad [N, V] or None, lse [N])`, float32, as `divergence_and_grad` (temperature 1).
    """
    z = student_logits.float()
    idx = topk_indices.long()
    lt, lt_rest = topk_logprobs.float(), rest_logprob.float()
    ls = F.log_softmax(z, dim=-1)
    lse = z[:, 0] - ls[:, 0]
    pt, pt_rest = lt.exp(), lt_rest.exp()
    ls_k = ls.gather(1, idx)
    others = ls.scatter(1, idx, float("-inf"))  # student log-probs of the tokens outside the teacher's top-k
    ls_rest = torch.logsumexp(others, dim=-1)
    has_rest = pt_rest > 0
    rest_term = torch.where(has_rest, pt_rest * (lt_rest - torch.where(has_rest, ls_rest, 0.0)), 0.0)
    loss = (pt * (lt - ls_k)).sum(-1) + rest_term
    if not need_grad:
        return loss, None, lse
    total_mass = pt.sum(-1) + pt_rest
    # q_j / q_rest for tokens outside the top-k, times the teacher's rest mass (0 where there is none)
    ratio = others.sub_(torch.where(has_rest, ls_rest, 0.0)[:, None]).exp_().mul_(pt_rest[:, None])
    grad = ls.exp_().mul_(total_mass[:, None]).sub_(ratio).scatter_add_(1, idx, -pt)
    return loss, grad, lse


def hidden_state_loss(name: str, student_states: torch.Tensor, teacher_states: torch.Tensor) -> torch.Tensor:
    """Per-position loss between hidden states of equal width.

    Args:
        name (`str`): "cosine" (1 - cosine similarity) or "mse" (mean squared error over the hidden dimension).
        student_states (`torch.Tensor` of shape `[N, H]`), teacher_states (`torch.Tensor` of shape `[N, H]`).

    Returns:
        `torch.Tensor` of shape `[N]`, float32.
    """
    s, t = student_states.float(), teacher_states.float()
    if name == "cosine":
        return 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)
    if name == "mse":
        return (s - t).pow(2).mean(-1)
    raise ValueError(f"Unknown hidden_state_loss {name!r}; choose one of {HIDDEN_STATE_LOSSES}.")


def target_mask(
    attention_mask: torch.Tensor | None, labels: torch.Tensor | None, input_ids: torch.Tensor
) -> torch.Tensor:
    """Which positions count, for next-token prediction: position i predicts token i + 1.

    A position counts when its own and the next token are real (attention_mask 1) and the next label is not -100.

    Args:
        attention_mask (`torch.Tensor` of shape `[B, T]` or None), labels (`torch.Tensor` of shape `[B, T]` or None),
        input_ids (`torch.Tensor` of shape `[B, T]`): used for the shape when both others are None.

    Returns:
        `torch.BoolTensor` of shape `[B, T - 1]`, for positions 0 .. T-2.
    """
    mask = torch.ones_like(input_ids[:, 1:], dtype=torch.bool)
    if attention_mask is not None:
        mask &= attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
    if labels is not None:
        mask &= labels[:, 1:] != -100
    return mask
