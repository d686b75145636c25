"""Text loading and packing behind the CLI: local formats, blocks, calibration batches (never random tokens)."""

from __future__ import annotations

import json

import pytest
import torch

from hf_minitron.data import calibration_batches, load_texts, pack_texts, tokenize_and_pack
from hf_minitron.io import atomic_output_dir, atomic_write_text


@pytest.fixture(scope="module")
def tokenizer():
    from cli_fixtures import pydoc_lines

    from hf_minitron.quickstart import train_tokenizer

    return train_tokenizer(pydoc_lines(200), vocab_size=300)


DOCS = ["First document about lists and tuples.", "Second one: dictionaries map keys to values.", "Third."]


def test_local_formats_give_the_same_documents(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n".join(DOCS) + "\n")
    (tmp_path / "a.jsonl").write_text(
        "\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(DOCS)) + "\n"
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": DOCS}), tmp_path / "a.parquet")
    for name in ("a.txt", "a.jsonl", "a.parquet"):
        assert load_texts(tmp_path / name) == DOCS, name
    assert load_texts(tmp_path) == DOCS * 3  # a folder: every file, sorted by name
    assert load_texts(tmp_path / "a.txt", max_texts=2) == DOCS[:2]


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_texts(tmp_path / "missing.jsonl")
    (tmp_path / "b.jsonl").write_text(json.dumps({"content": "x"}) + "\n")
    with pytest.raises(ValueError, match="text"):
        load_texts(tmp_path / "b.jsonl")
    (tmp_path / "empty.txt").write_text("\n\n\n")
    with pytest.raises(ValueError, match="no text"):
        load_texts(tmp_path / "empty.txt")


def test_pack_texts_cuts_eos_joined_stream_into_blocks(tokenizer):
    texts = DOCS * 20
    ds = pack_texts(texts, tokenizer, seq_len=16)
    stream = []
    for t in texts:
        stream += tokenizer(t, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    assert len(ds) == len(stream) // 16
    assert ds[0]["input_ids"] == stream[:16] and ds[1]["input_ids"] == stream[16:32]
    assert ds[0]["labels"] == ds[0]["input_ids"] and ds[0]["attention_mask"] == [1] * 16
    with pytest.raises(ValueError, match="block"):
        pack_texts(["tiny"], tokenizer, seq_len=512)


def test_calibration_batches_use_real_text_and_pad_short_corpora(tokenizer):
    texts = DOCS * 20
    batches = calibration_batches(texts, tokenizer, num_samples=5, seq_len=16, batch_size=2)
    assert [len(b["input_ids"]) for b in batches] == [2, 2, 1]
    assert torch.equal(
        torch.cat([b["input_ids"] for b in batches]), tokenize_and_pack(texts, tokenizer, 16)[:5]
    )
    short = calibration_batches(DOCS, tokenizer, num_samples=8, seq_len=512, batch_size=8)
    (batch,) = short
    assert (
        batch["input_ids"].shape[0] == 3 and batch["attention_mask"].sum() < batch["attention_mask"].numel()
    )
    first = tokenizer(DOCS[0], add_special_tokens=False).input_ids
    assert batch["input_ids"][0, : len(first)].tolist() == first


def test_atomic_helpers(tmp_path):
    with atomic_output_dir(tmp_path / "out") as tmp:
        (tmp / "f").write_text("1")
        assert not (tmp_path / "out").exists()
    assert (tmp_path / "out" / "f").read_text() == "1"
    with pytest.raises(FileExistsError):
        with atomic_output_dir(tmp_path / "out", overwrite=False):
            pass
    atomic_write_text(tmp_path / "out" / "f", "2")
    assert (tmp_path / "out" / "f").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_file_keeps_the_old_file_when_writing_fails(tmp_path):
    from hf_minitron.io import atomic_file

    target = tmp_path / "scores.safetensors"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.safetensors"]


def test_importance_scores_save_is_atomic(tmp_path, monkeypatch):
    import torch

    import hf_minitron.importance.scores as scores_module
    from hf_minitron import ImportanceScores

    path = tmp_path / "scores.safetensors"
    ImportanceScores(channels=torch.arange(4.0)).save(path)

    def broken_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(scores_module, "save_file", broken_save_file)
    with pytest.raises(OSError):
        ImportanceScores(channels=torch.zeros(4)).save(path)
    assert torch.equal(ImportanceScores.load(path).channels, torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["scores.safetensors"]


class CountingTokenizer:
    """Wraps a tokenizer and records how many documents each call tokenizes."""

    def __init__(self, tokenizer):
        self.inner, self.calls = tokenizer, []
        self.eos_token_id, self.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id

    def __call__(self, texts, **kwargs):
        self.calls.append(len(texts))
        return self.inner(texts, **kwargs)


def _fake_hub_dataset(monkeypatch, n_docs=100_000):
    """`datasets.load_dataset` answering any name with a generator-backed stream (offline); counts rows read."""
    import datasets

    state = {"rows": 0, "streaming": None}

    def rows():
        for i in range(n_docs):
            state["rows"] += 1
            yield {"text": f"{DOCS[i % 3]} number {i}", "id": i}

    def load_dataset(name, config=None, split=None, streaming=False, **kwargs):
        state["streaming"] = streaming
        if not streaming:
            raise AssertionError("the whole split would be downloaded")
        return datasets.IterableDataset.from_generator(rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return state


def test_calibration_from_a_dataset_name_streams_and_stops_early(tokenizer, monkeypatch):
    from hf_minitron.data import iter_texts

    state = _fake_hub_dataset(monkeypatch)
    counting = CountingTokenizer(tokenizer)
    batches = calibration_batches(
        iter_texts("someone/big-corpus"), counting, num_samples=6, seq_len=16, batch_size=4
    )
    assert state["streaming"] is True
    assert [len(b["input_ids"]) for b in batches] == [4, 2] and all(
        b["attention_mask"].all() for b in batches
    )
    assert state["rows"] < 1_000  # not the 100k documents of the split
    assert (
        max(counting.calls) <= 256 and sum(counting.calls) < 1_000
    )  # tokenized in batches, only what is needed
    stream = []  # the blocks are the first 6 x 16 tokens of the EOS-joined documents
    for i in range(20):
        stream += tokenizer(f"{DOCS[i % 3]} number {i}", add_special_tokens=False).input_ids + [
            tokenizer.eos_token_id
        ]
    assert torch.cat([b["input_ids"] for b in batches]).flatten().tolist() == stream[:96]


def test_load_texts_with_max_texts_streams(monkeypatch):
    state = _fake_hub_dataset(monkeypatch)
    assert len(load_texts("someone/big-corpus", max_texts=5)) == 5 and state["rows"] <= 6


def test_pack_in_batches_equals_one_call(tokenizer):
    texts = [f"{DOCS[i % 3]} {i}" for i in range(700)]  # more than one tokenizer batch
    counting = CountingTokenizer(tokenizer)
    blocks = tokenize_and_pack(iter(texts), counting, seq_len=32)
    assert len(counting.calls) == 3 and max(counting.calls) == 256
    ids = []
    for doc in tokenizer(texts, add_special_tokens=False).input_ids:
        ids += doc + [tokenizer.eos_token_id]
    n = len(ids) // 32
    assert blocks.tolist() == torch.tensor(ids[: n * 32]).view(n, 32).tolist()
    assert tokenize_and_pack(iter(texts), tokenizer, seq_len=32, max_blocks=3).tolist() == blocks[:3].tolist()


def test_prune_and_eval_clis_stream_a_dataset_name(tmp_path, monkeypatch, capsys):
    from cli_fixtures import make_workspace, prune_args

    from hf_minitron.cli import main

    ws = make_workspace(tmp_path)
    state = _fake_hub_dataset(monkeypatch)
    args = prune_args(ws, tmp_path / "pruned")
    args[args.index("--calibration-data") + 1] = "someone/big-corpus"
    assert main(args) == 0
    assert (
        state["streaming"] is True and 0 < state["rows"] < 1_000
    )  # 8 blocks of 32 tokens, not 100k documents
    record = json.loads((tmp_path / "pruned" / "hf_minitron.json").read_text())
    assert record["pruning"]["calibration_samples"] == 8 and record["datasets"] == ["someone/big-corpus"]
    state["rows"] = 0
    capsys.readouterr()
    assert (
        main(
            ["eval", str(ws["model"]), "--data", "someone/big-corpus", "--seq-len", "32", "--max-blocks", "3"]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["blocks"] == 3 and 0 < state["rows"] < 1_000
