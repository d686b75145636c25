"""Distillation losses against independent references; the chunked loss against the unchunked computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_minitron.distillation.chunked import LogitHead, chunked_distillation_loss
from hf_minitron.distillation.losses import divergence, hidden_state_loss, target_mask


def reference(name, s_logits, t_logits, temperature):
    """Per-position divergence written out from the definitions with torch.nn.functional.kl_div."""
    p_s = F.softmax(s_logits.double() / temperature, -1)
    p_t = F.softmax(t_logits.double() / temperature, -1)
    kl = lambda p, q: F.kl_div(q.log(), p, reduction="none").sum(-1)  # noqa: E731  KL(p || q)
    if name == "forward_kl":
        value = kl(p_t, p_s)
    elif name == "reverse_kl":
        value = kl(p_s, p_t)
    else:
        m = (p_s + p_t) / 2
        value = (kl(p_s, m) + kl(p_t, m)) / 2
    return value * temperature**2


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd"])
def test_divergence_matches_reference_with_padding_and_ignored_labels(name, temperature):
    torch.manual_seed(0)
    s_logits, t_logits = torch.randn(2, 6, 11) * 3, torch.randn(2, 6, 11) * 3
    input_ids = torch.randint(0, 11, (2, 6))
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    labels = input_ids.clone()
    labels[0, 2] = -100
    labels[1, 4:] = -100
    mask = target_mask(attention_mask, labels, input_ids)
    # Position i predicts token i + 1: row 0 drops position 1 (label 2 ignored), row 1 keeps positions 0..2.
    assert mask.tolist() == [[True, False, True, True, True], [True, True, True, False, False]]
    got = divergence(name, s_logits[:, :-1][mask], t_logits[:, :-1][mask], temperature).mean()
    want = torch.cat(
        [reference(name, s_logits[0, i], t_logits[0, i], temperature)[None] for i in (0, 2, 3, 4)]
        + [reference(name, s_logits[1, i], t_logits[1, i], temperature)[None] for i in (0, 1, 2)]
    ).mean()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_hidden_state_losses():
    s, t = torch.randn(5, 8), torch.randn(5, 8)
    torch.testing.assert_close(hidden_state_loss("mse", s, t), ((s - t) ** 2).mean(-1))
    cos = (s * t).sum(-1) / (s.norm(dim=-1) * t.norm(dim=-1))
    torch.testing.assert_close(hidden_state_loss("cosine", s, t), 1 - cos)
    assert hidden_state_loss("cosine", s, 2 * s).abs().max() < 1e-6


@pytest.mark.parametrize(
    "name,temperature,scale,softcap,vocab,bias",
    [
        ("forward_kl", 1.0, 1.0, None, None, False),
        ("reverse_kl", 2.0, 0.25, None, None, True),
        ("jsd", 1.0, 1.0, 3.0, None, False),
        ("forward_kl", 2.0, 1.0, None, 29, False),  # padded vocabulary truncated to 29 tokens
    ],
)
def test_chunked_equals_unchunked_values_and_gradients(name, temperature, scale, softcap, vocab, bias):
    torch.manual_seed(0)
    n, hs, ht, v = 23, 8, 12, 32
    s_hidden = torch.randn(n, hs, requires_grad=True)
    s_weight = torch.randn(v, hs, requires_grad=True)
    s_bias = torch.randn(v, requires_grad=True) if bias else None
    t_hidden, t_weight = torch.randn(n, ht), torch.randn(v, ht)
    labels = torch.randint(0, vocab or v, (n,))
    s_head = LogitHead(s_weight, s_bias, scale, softcap, vocab)
    t_head = LogitHead(t_weight, None, 1.0, softcap, vocab)
    kw = dict(loss=name, temperature=temperature, distill_weight=0.7, lm_weight=0.3)

    # Reference: full logits, plain autograd.
    s_logits = F.linear(s_hidden, s_weight, s_bias)[:, :vocab] * scale
    t_logits = F.linear(t_hidden, t_weight)[:, :vocab]
    if softcap:
        s_logits, t_logits = (torch.tanh(x / softcap) * softcap for x in (s_logits, t_logits))
    ref_d = reference(name, s_logits, t_logits, temperature).sum()
    ref_ce = F.cross_entropy(s_logits.double(), labels, reduction="sum")
    ref = 0.7 * ref_d + 0.3 * ref_ce
    params = [p for p in (s_hidden, s_weight, s_bias) if p is not None]
    ref_grads = torch.autograd.grad(ref, params)

    for chunk_size in (1, 5, 64):
        total, d_sum, ce_sum = chunked_distillation_loss(
            s_hidden, s_head, t_hidden, t_head, labels, chunk_size=chunk_size, **kw
        )
        torch.testing.assert_close(d_sum.double(), ref_d, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ce_sum.double(), ref_ce, rtol=1e-5, atol=1e-5)
        grads = torch.autograd.grad(total * 2.0, params)  # an upstream factor scales the stored gradients
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g.double(), 2.0 * r.double(), rtol=1e-4, atol=1e-5)


def test_chunked_without_grad_computes_values_only():
    s_head = LogitHead(torch.randn(16, 4))
    t_head = LogitHead(torch.randn(16, 4))
    with torch.no_grad():
        total, d_sum, ce_sum = chunked_distillation_loss(torch.randn(3, 4), s_head, torch.randn(3, 4), t_head)
    assert total.item() == pytest.approx(d_sum.item()) and ce_sum.item() == 0.0


def test_no_grad_with_parameters_that_require_grad_skips_the_closed_form_gradient(monkeypatch):
    """Evaluation inside training: the head's parameters require grad but grad mode is off."""
    import hf_minitron.distillation.chunked as chunked

    torch.manual_seed(0)
    s_weight = torch.randn(16, 4, requires_grad=True)
    s_hidden = torch.randn(6, 4, requires_grad=True)
    t_head, t_hidden = LogitHead(torch.randn(16, 4)), torch.randn(6, 4)
    labels = torch.randint(0, 16, (6,))
    want = chunked_distillation_loss(s_hidden, LogitHead(s_weight), t_hidden, t_head, labels, lm_weight=0.5)

    calls = []
    original = chunked.divergence_and_grad
    monkeypatch.setattr(chunked, "divergence_and_grad", lambda *a: calls.append(1) or original(*a))
    with torch.no_grad():
        got = chunked_distillation_loss(
            s_hidden, LogitHead(s_weight), t_hidden, t_head, labels, lm_weight=0.5
        )
    assert not calls  # no lm_head-sized gradient buffer, no extra matmuls
    assert not got[0].requires_grad
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w.detach())
    chunked_distillation_loss(s_hidden, LogitHead(s_weight), t_hidden, t_head, labels)
    assert calls  # with grad mode on, the gradient is computed in the forward


def bucketed_kl_reference(s_logits, t_logits, k):
    """KL over the teacher's top-k tokens plus one 'other' bucket, written out in float64 with plain indexing."""
    p_t, p_s = F.softmax(t_logits.double(), -1), F.softmax(s_logits.double(), -1)
    rows = []
    for i in range(p_t.shape[0]):
        top = p_t[i].argsort(descending=True)[:k]
        other = torch.ones(p_t.shape[1], dtype=torch.bool)
        other[top] = False
        t = torch.cat([p_t[i, top], p_t[i, other].sum()[None]])
        s = torch.cat([p_s[i, top], p_s[i, other].sum()[None]])
        keep = t > 0
        rows.append((t[keep] * (t[keep].log() - s[keep].log())).sum())
    return torch.stack(rows)


@pytest.mark.parametrize("k", [1, 5, 32])  # 32 = the whole vocabulary
def test_topk_kl_matches_bucketed_reference_values_and_gradients(k):
    from hf_minitron.distillation.chunked import chunked_topk_distillation_loss
    from hf_minitron.distillation.losses import teacher_topk

    torch.manual_seed(0)
    n, h, v = 13, 8, 32
    s_hidden = torch.randn(n, h, requires_grad=True)
    s_weight = torch.randn(v, h, requires_grad=True)
    t_logits = torch.randn(n, v) * 2
    labels = torch.randint(0, v, (n,))
    values, indices, rest = teacher_topk(t_logits, k)
    assert (rest == float("-inf")).all() == (k == v)
    s_logits = F.linear(s_hidden, s_weight)
    ref = 0.7 * bucketed_kl_reference(s_logits, t_logits, k).sum() + 0.3 * F.cross_entropy(
        s_logits.double(), labels, reduction="sum"
    )
    ref_grads = torch.autograd.grad(ref, (s_hidden, s_weight))
    for chunk_size in (1, 4, 64):
        total, d_sum, _ = chunked_topk_distillation_loss(
            s_hidden, LogitHead(s_weight), values, indices.int(), rest, labels,
            distill_weight=0.7, lm_weight=0.3, chunk_size=chunk_size,
        )  # fmt: skip
        torch.testing.assert_close(total.double(), ref, rtol=1e-5, atol=1e-5)
        for g, r in zip(torch.autograd.grad(total, (s_hidden, s_weight)), ref_grads):
            torch.testing.assert_close(g.double(), r.double(), rtol=1e-4, atol=1e-5)
    if k == v:  # all tokens kept: the full forward KL
        full = divergence("forward_kl", s_logits, t_logits).sum()
        torch.testing.assert_close(d_sum, full, rtol=1e-5, atol=1e-5)
