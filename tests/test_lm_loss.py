"""The one LM loss of the library (`evaluation.lm_loss_sum`), chunked from final hidden states, against the
cross-entropy of the model's own full logits, on several families (Gemma 2 soft-capping, Granite logits_scaling)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from tiny_models import random_batches, tiny_model

from hf_minitron.evaluation import lm_loss_sum, perplexity_on_blocks
from hf_minitron.importance.estimate import lm_loss
from hf_minitron.search.run import evaluate_lm_loss

FAMILIES = ["llama", "qwen2", "gemma", "gemma2", "granite", "nemotron"]


def reference(model, batches) -> float:
    """Mean next-token cross-entropy from `model(...).logits` over pairs of real tokens."""
    total, count = 0.0, 0
    with torch.no_grad():
        for b in batches:
            logits = (
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1].float()
            )
            mask = b["attention_mask"].bool()
            valid = mask[:, 1:] & mask[:, :-1]
            ce = F.cross_entropy(logits[valid], b["input_ids"][:, 1:][valid], reduction="sum")
            total, count = total + ce.item(), count + int(valid.sum())
    return total / count


@pytest.mark.parametrize("family", FAMILIES)
def test_chunked_loss_equals_cross_entropy_of_full_logits(family):
    overrides = {"final_logit_softcapping": 0.1} if family == "gemma2" else {}
    model = tiny_model(family, **overrides)
    batches = random_batches(2, batch_size=3, seq_len=12, pad_last=4)
    expected = reference(model, batches)
    for chunk_size in (None, 5):
        sums = [
            lm_loss_sum(model, b["input_ids"], b["attention_mask"], chunk_size=chunk_size) for b in batches
        ]
        got = sum(s.item() for s, _ in sums) / sum(n.item() for _, n in sums)
        assert got == pytest.approx(expected, rel=1e-5)
    assert lm_loss(model, batches)[0] == pytest.approx(expected, rel=1e-5)


def test_transform_matters():
    """Without Gemma 2's soft-capping or Granite's scaling the loss would differ: the check above has teeth."""
    for family, key, value in (
        ("gemma2", "final_logit_softcapping", 0.1),
        ("granite", "logits_scaling", 0.05),
    ):
        model = tiny_model(family, **{key: value})
        batches = random_batches(1, batch_size=2, seq_len=8)
        chunked = lm_loss(model, batches)[0]
        setattr(model.config, key, None if key == "final_logit_softcapping" else 1.0)
        assert lm_loss(model, batches)[0] != pytest.approx(chunked, rel=1e-4)


def test_no_full_logits_are_built():
    model = tiny_model("llama")

    def refuse(module, inputs, output):  # the one-position check of the head (_check_head) is fine
        if inputs[0].shape[-2] > 1:
            raise AssertionError("the lm_head module ran on the batch: full logits")

    model.lm_head.register_forward_hook(refuse)
    blocks = torch.cat([b["input_ids"] for b in random_batches(2, batch_size=2, seq_len=10)])
    assert perplexity_on_blocks(model, blocks, batch_size=3, progress=False)["tokens"] == 4 * 9


def test_every_entry_point_agrees_and_takes_any_dataset():
    model = tiny_model("granite")
    batches = random_batches(2, batch_size=2, seq_len=10)
    blocks = torch.cat([b["input_ids"] for b in batches])
    expected = reference(model, batches)
    assert perplexity_on_blocks(model, blocks, batch_size=3, progress=False)["loss"] == pytest.approx(
        expected, rel=1e-5
    )
    rows = [{"input_ids": r.tolist(), "attention_mask": [1] * len(r), "labels": r.tolist()} for r in blocks]

    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            return {k: torch.tensor(v) for k, v in rows[i].items()}

    hf = Dataset.from_list([{**r, "text": "extra column"} for r in rows])
    for dataset in (rows, Plain(), hf, hf.to_iterable_dataset()):
        assert evaluate_lm_loss(model, dataset, batch_size=3) == pytest.approx(expected, rel=1e-5)


def test_padding_and_ignored_labels_do_not_count():
    model = tiny_model("llama")
    (batch,) = random_batches(1, batch_size=2, seq_len=10, pad_last=3)
    expected = reference(model, [batch])
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    rows = [
        {"input_ids": i.tolist(), "attention_mask": m.tolist(), "labels": y.tolist()}
        for i, m, y in zip(batch["input_ids"], batch["attention_mask"], labels)
    ]
    assert evaluate_lm_loss(model, rows) == pytest.approx(expected, rel=1e-5)


def test_an_unknown_logit_transform_is_refused():
    """A forward that scales its logits in a way the chunked head does not know (here: the head would apply
    Granite's logits_scaling, which Llama's forward ignores) must not give a silently wrong loss."""
    model = tiny_model("llama")
    model.config.logits_scaling = 4.0
    (batch,) = random_batches(1)
    with pytest.raises(ValueError, match="does not reproduce the model's logits"):
        lm_loss_sum(model, batch["input_ids"], batch["attention_mask"])
    del model.config.logits_scaling
    lm_loss_sum(model, batch["input_ids"], batch["attention_mask"])  # checked once, then cached
    model.forward = None  # a second call must not run the forward again
    lm_loss_sum(model, batch["input_ids"], batch["attention_mask"])
