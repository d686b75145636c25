"""The quickstart end to end with the smoke recipe (seconds), its outputs, and the teacher cache."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_minitron.cli import main
from hf_minitron.quickstart import builtin_corpus, load_or_train_teacher


def test_builtin_corpus_is_deterministic_and_disjoint():
    train, held = builtin_corpus(max_chars=50_000)
    train2, held2 = builtin_corpus(max_chars=50_000)
    assert (train, held) == (train2, held2)
    assert train and held and not set(train) & set(held)
    held_chars = sum(map(len, held))
    assert 0.03 < held_chars / (held_chars + sum(map(len, train))) < 0.2


def test_quickstart_smoke_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    cache = tmp_path / "cache"
    assert main(["quickstart", "--smoke", "--output", str(out), "--cache_dir", str(cache)]) == 0
    printed = capsys.readouterr().out
    assert "pruned + distilled" in printed and "from scratch" in printed and "wall time" in printed

    results = json.loads((out / "results.json").read_text())
    for key in ("teacher", "pruned", "distilled", "scratch"):
        assert results[key]["parameters"] > 0 and results[key]["heldout_perplexity"] > 1
    curves = results["curves"]
    assert (
        results["distilled"]["parameters"]
        == results["scratch"]["parameters"]
        < results["teacher"]["parameters"]
    )
    assert results["tokens"]["distillation"] == results["tokens"]["scratch"] > 0
    # Distillation must do something: the distilled student beats the same student right after pruning.
    assert results["distilled"]["heldout_perplexity"] < results["pruned"]["heldout_perplexity"]
    assert curves["distill"][-1][1] < curves["distill"][0][1]
    assert results["wall_time_seconds"]["total"] > 0 and results["teacher_cached"] is False
    assert curves["distill"][0][0] == 0 and curves["distill"][-1][0] == results["tokens"]["distillation"]
    assert [t for t, _ in curves["distill"]] == [t for t, _ in curves["scratch"]]
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == results["distilled"]["parameters"]
    AutoTokenizer.from_pretrained(out)
    card = ModelCard.load(out / "README.md")
    assert {"pruned", "minitron", "hf-minitron", "distilled"} <= set(card.data.tags)
    assert card.data.eval_results is None  # the built-in corpus is not a Hub dataset: no model-index entry
    assert "| `python-docs-heldout` | perplexity |" in card.text
    assert "loss_curve.png" in card.text and "from scratch" in card.text
    assert list(cache.glob("quickstart-teacher/*/teacher_info.json"))


def test_teacher_is_cached(tmp_path):
    train, _ = builtin_corpus(max_chars=20_000)
    kw = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
              num_key_value_heads=1, seq_len=32, batch_size=4, steps=3)  # fmt: skip
    model, tok, info = load_or_train_teacher(tmp_path, train, **kw)
    assert info["cached"] is False
    model2, tok2, info2 = load_or_train_teacher(tmp_path, train, **kw)
    assert info2["cached"] is True and info2["path"] == info["path"]
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert (a == b).all()
    assert tok.get_vocab() == tok2.get_vocab()
    _, _, info3 = load_or_train_teacher(
        tmp_path, train, **{**kw, "steps": 4}
    )  # another setting: another teacher
    assert info3["cached"] is False and info3["path"] != info["path"]


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    from hf_minitron.quickstart import default_cache_dir

    monkeypatch.setenv("HF_MINITRON_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path


@pytest.mark.parametrize("flag", [["--distill_tokens", "0"], ["--seq_len", "1"]])
def test_bad_quickstart_settings_are_refused(tmp_path, flag):
    with pytest.raises((ValueError, SystemExit)):
        rc = main(
            ["quickstart", "--smoke", "--output", str(tmp_path / "o"), "--cache_dir", str(tmp_path), *flag]
        )
        if rc:
            raise SystemExit(rc)
    assert not (tmp_path / "o").exists()
