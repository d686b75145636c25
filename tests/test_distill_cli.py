"""`hf-minitron teacher-logits` and `hf-minitron distill --teacher_logits`: offline distillation from the command line."""

from __future__ import annotations

import json

import pytest
from cli_fixtures import make_workspace
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

from hf_minitron import TeacherLogitsDataset
from hf_minitron.cli import main
from hf_minitron.hub import load_record


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("offline"))


def test_teacher_logits_then_distill_without_loading_a_teacher(ws, tmp_path, capsys, monkeypatch):
    store = tmp_path / "store"
    argv = ["teacher-logits", "--teacher", str(ws["model"]), "--data", str(ws["train"]), "--seq-len", "32",
            "--output", str(store), "--top_k", "8", "--blocks_per_shard", "4", "--no_progress"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    stored = TeacherLogitsDataset(store)
    assert report["blocks"] == len(stored) > 4 and stored.top_k == 8
    # bf16 values + int32 indices per kept token, a float32 rest, the block's ids / mask / labels (31 of 32 predict),
    # plus the safetensors headers of these small shards
    assert (8 * 6 + 4) * 31 / 32 + 9 < report["bytes_per_token"] < (8 * 6 + 4) * 31 / 32 + 9 + 6
    assert main(argv) == 0  # a rerun finds every shard done and resumes to the end at once
    assert json.loads(capsys.readouterr().out)["bytes"] == report["bytes"]

    loaded = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, path, *args, **kwargs):
        loaded.append(str(path))
        return original(cls, path, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    out = tmp_path / "distilled"
    argv = ["distill", "--student", str(ws["model"]), "--teacher_logits", str(store), "--output", str(out),
            "--max_steps", "2", "--per_device_train_batch_size", "4", "--report_to", "none", "--save_strategy", "no",
            "--use_cpu", "--dataloader_pin_memory", "false", "--eval_data", str(ws["held"]), "--seq-len", "32"]  # fmt: skip
    assert main(argv) == 0
    assert loaded == [str(ws["model"])]  # the student only: no teacher was loaded
    # stdout is the JSON alone: the Trainer's log lines go to stderr
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"] == 2 * 4 * 32 and "eval_lm_loss" in result["metrics"]
    assert not (out / "training_args.bin").exists()
    record = load_record(out)
    assert record["distillation"]["settings"]["teacher_top_k"] == 8
    assert record["distillation"]["data"] == store.name  # machine paths are cut in records meant for upload
    assert "teacher_top_k" in ModelCard.load(out / "README.md").text


def test_teacher_logits_cli_streams_the_corpus_into_the_blocks_of_pack_texts(
    ws, tmp_path, capsys, monkeypatch
):
    """Documents are read and tokenized as shards are needed (not all before the teacher runs); the stored blocks are
    exactly `pack_texts`'s."""
    from transformers import AutoTokenizer

    import hf_minitron.cli.teacher_logits as cli_module
    import hf_minitron.data as data_module
    import hf_minitron.distillation.offline as offline

    texts = data_module.load_texts(ws["train"])
    want = data_module.pack_texts(texts, AutoTokenizer.from_pretrained(ws["model"]), 32)
    texts = data_module.load_texts(ws["train"])
    want = data_module.pack_texts(texts, AutoTokenizer.from_pretrained(ws["model"]), 32)
    read, seen = [], []
    iter_texts, teacher_rows = data_module.iter_texts, offline._teacher_rows
    monkeypatch.setattr(data_module, "iter_texts", lambda *a: (read.append(t) or t for t in iter_texts(*a)))
    monkeypatch.setattr(offline, "_teacher_rows", lambda *a: seen.append(len(read)) or teacher_rows(*a))
    monkeypatch.setattr(cli_module, "STREAM_TOKENIZE_DOCS", 4)
    store = tmp_path / "store"
    argv = ["teacher-logits", "--teacher", str(ws["model"]), "--data", str(ws["train"]), "--seq-len", "32",
            "--output", str(store), "--top_k", "4", "--blocks_per_shard", "2", "--batch_size", "2", "--no_progress"]  # fmt: skip
    assert main(argv) == 0
    assert seen[0] < len(texts) // 4  # the teacher ran on the first shard after a few documents were read
    assert len(read) == len(texts)
    stored = TeacherLogitsDataset(store)
    assert json.loads(capsys.readouterr().out)["blocks"] == len(stored) == len(want)
    for i in (0, len(want) // 2, len(want) - 1):
        assert stored[i]["input_ids"].tolist() == want[i]["input_ids"]
