"""Offline teacher: stored top-k teacher log-probs, resumable store, training without a teacher."""

from __future__ import annotations

import json

import pytest
import torch
from distill_worker import teacher_and_student, tiny_args, token_dataset
from safetensors.torch import load_file

import hf_minitron.distillation.offline as offline
from hf_minitron import DistillationTrainer, TeacherLogitsDataset, compute_teacher_logits
from hf_minitron.distillation import TeacherLogitsArguments


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def store(tmp_path, teacher, data, name="store", **settings):
    args = TeacherLogitsArguments(**{"batch_size": 2, "blocks_per_shard": 3, **settings})
    return compute_teacher_logits(teacher, data, tmp_path / name, args, progress=False)


def test_offline_training_with_k_equal_vocab_matches_online_training(tmp_path):
    """k = vocab and float32 values: the stored distribution is the teacher's, so training is the same."""
    data = token_dataset(8, ragged=True)
    teacher, student = teacher_and_student(num_hidden_layers=2)
    path = store(tmp_path, teacher, data, top_k=128, values_dtype="float32")
    args = dict(max_steps=3, lm_weight=0.5, train_sampling_strategy="sequential")
    online = DistillationTrainer(
        model=student, teacher_model=teacher, args=tiny_args(tmp_path / "on", **args), train_dataset=data
    )
    online.train()
    _, offline_student = teacher_and_student(num_hidden_layers=2)
    trainer = DistillationTrainer(
        model=offline_student,
        args=tiny_args(tmp_path / "off", **args),
        train_dataset=TeacherLogitsDataset(path),
    )
    assert trainer.teacher_model is None  # no teacher loaded or run
    trainer.train()
    want, got = state(student), state(offline_student)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5, msg=k)
    assert not torch.equal(got["lm_head.weight"], teacher_and_student(num_hidden_layers=2)[1].lm_head.weight)


@pytest.mark.parametrize("values_dtype,rtol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_offline_kl_equals_online_kl_when_k_is_the_vocabulary(tmp_path, values_dtype, rtol):
    data = token_dataset(4, ragged=True)
    teacher, student = teacher_and_student()
    path = store(tmp_path, teacher, data, top_k=128, values_dtype=values_dtype)
    stored = TeacherLogitsDataset(path)
    assert stored[0]["teacher_topk_logprobs"].dtype == getattr(torch, values_dtype)
    assert stored[0]["teacher_topk_indices"].dtype == torch.int32
    online = DistillationTrainer(
        model=student, teacher_model=teacher, args=tiny_args(tmp_path / "on"), eval_dataset=data
    )
    offline_trainer = DistillationTrainer(
        model=student, args=tiny_args(tmp_path / "off"), eval_dataset=stored
    )
    want, got = online.evaluate(), offline_trainer.evaluate()
    assert got["eval_distill_loss"] == pytest.approx(want["eval_distill_loss"], rel=rtol)
    assert got["eval_lm_loss"] == pytest.approx(want["eval_lm_loss"], rel=1e-6)


def test_store_contents_and_sizes(tmp_path):
    data = token_dataset(5, seq_len=16)
    teacher, _ = teacher_and_student()
    path = store(tmp_path, teacher, data, top_k=8)
    manifest = json.loads((path / "teacher_logits.json").read_text())
    assert manifest["complete"] and [s["rows"] for s in manifest["shards"]] == [3, 2]
    shard = load_file(path / "shard-00000.safetensors")
    assert shard["topk_logprobs"].shape == (3, 15, 8) and shard["topk_logprobs"].dtype == torch.bfloat16
    assert shard["topk_indices"].dtype == torch.int32 and shard["rest_logprob"].shape == (3, 15)
    ids = torch.tensor(data["input_ids"][:3])
    assert torch.equal(shard["input_ids"].long(), ids)
    with torch.no_grad():  # an independent reference: full logits of the whole model, log_softmax, topk
        lp = torch.log_softmax(teacher(input_ids=ids).logits[:, :-1].float(), -1)
    values, indices = lp.topk(8, -1)
    torch.testing.assert_close(shard["topk_logprobs"].float(), values, rtol=1e-2, atol=1e-2)
    assert (shard["topk_indices"].long() == indices).float().mean() > 0.99  # ties may reorder
    rest = torch.log1p(-values.exp().sum(-1))
    torch.testing.assert_close(shard["rest_logprob"], rest, rtol=1e-4, atol=1e-4)


def test_interrupted_store_resumes_at_the_first_missing_shard(tmp_path, monkeypatch):
    data = token_dataset(8)
    teacher, _ = teacher_and_student()
    straight = store(tmp_path, teacher, data, name="straight")
    calls = []
    original = offline._teacher_rows

    def failing(*args):
        calls.append(1)
        if len(calls) == 4:  # two shards of 3 blocks (two batches each) are written, then a crash
            raise RuntimeError("interrupted")
        return original(*args)

    monkeypatch.setattr(offline, "_teacher_rows", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        store(tmp_path, teacher, data, name="resumed")
    manifest = json.loads((tmp_path / "resumed" / "teacher_logits.json").read_text())
    assert [s["file"] for s in manifest["shards"]] == ["shard-00000.safetensors"] and not manifest["complete"]
    with pytest.raises(ValueError, match="incomplete"):
        TeacherLogitsDataset(tmp_path / "resumed")
    calls.clear()
    monkeypatch.setattr(offline, "_teacher_rows", lambda *a: calls.append(1) or original(*a))
    store(tmp_path, teacher, data, name="resumed")
    assert len(calls) == 3  # shard 1 (two batches) and shard 2 (one batch); shard 0 was kept
    for name in ("shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"):
        a, b = load_file(straight / name), load_file(tmp_path / "resumed" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="top_k: stored 32, now 16"):
        store(tmp_path, teacher, data, name="resumed", top_k=16)
    with pytest.raises(ValueError, match="data_fingerprint"):
        store(tmp_path, teacher, token_dataset(8, seed=5), name="resumed")


def test_offline_refuses_what_needs_the_teacher(tmp_path):
    teacher, student = teacher_and_student()
    stored = TeacherLogitsDataset(store(tmp_path, teacher, token_dataset(4), top_k=4))
    for kw, match in (
        (dict(hidden_state_weight=1.0), "hidden_state_weight.*hidden states"),
        (dict(distill_loss="reverse_kl"), "reverse_kl.*forward_kl"),
        (dict(distill_temperature=2.0), "distill_temperature"),
    ):
        with pytest.raises(ValueError, match=match):
            DistillationTrainer(model=student, args=tiny_args(tmp_path, **kw), train_dataset=stored)
    with pytest.raises(ValueError, match="teacher_model.*TeacherLogitsDataset"):
        DistillationTrainer(model=student, args=tiny_args(tmp_path), train_dataset=token_dataset(4))
    from tiny_models import tiny_model

    with pytest.raises(ValueError, match="vocab 128.*vocab is 96"):
        DistillationTrainer(model=tiny_model(vocab_size=96), args=tiny_args(tmp_path), train_dataset=stored)
    with pytest.raises(ValueError, match="top_k=129"):
        store(tmp_path, teacher, token_dataset(4), name="big", top_k=129)


def test_store_from_a_generator_streams_shard_by_shard_resumes_and_refuses_other_data(tmp_path, monkeypatch):
    """Rows are read one shard at a time (the teacher runs on shard 0 before shard 1 is read); an interrupted run from
    a generator resumes to the same store; other or fewer blocks are refused by the per-shard fingerprints."""
    data = token_dataset(8)
    teacher, _ = teacher_and_student()
    straight = store(tmp_path, teacher, data, name="straight")
    read = []

    def rows(dataset):
        for i in range(len(dataset)):
            read.append(i)
            yield dataset[i]

    seen, original = [], offline._teacher_rows

    def failing(*args):
        seen.append(len(read))
        if len(seen) == 4:  # shard 0 (two batches) written, then a crash in shard 1
            raise RuntimeError("interrupted")
        return original(*args)

    monkeypatch.setattr(offline, "_teacher_rows", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        store(tmp_path, teacher, rows(data), name="streamed")
    assert seen == [3, 3, 6, 6]  # blocks_per_shard=3: at most one shard of rows was read ahead of the teacher
    monkeypatch.setattr(offline, "_teacher_rows", original)
    store(tmp_path, teacher, rows(data), name="streamed")
    manifest = json.loads((tmp_path / "streamed" / "teacher_logits.json").read_text())
    assert manifest["complete"] and manifest["num_blocks"] == 8
    assert (
        manifest["data_fingerprint"]
        == json.loads((straight / "teacher_logits.json").read_text())["data_fingerprint"]
    )
    for name in ("shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"):
        a, b = load_file(straight / name), load_file(tmp_path / "streamed" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = [
        *data.select(range(3)),
        *token_dataset(8, seed=5).select(range(3, 8)),
    ]  # shard 0 equal, shard 1 not
    with pytest.raises(ValueError, match="data_fingerprint of shard 1"):
        store(tmp_path, teacher, other, name="streamed")
    with pytest.raises(ValueError, match="the store has 3 shards, the data 2"):
        store(tmp_path, teacher, rows(data.select(range(6))), name="streamed")
