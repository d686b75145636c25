"""`hf-minitron search` end to end on a tiny model with a tokenizer trained in the test."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

from hf_minitron.cli import main
from hf_minitron.cli.search import parse_budget
from hf_minitron.search import count_parameters

TEXT = "\n\n".join(
    f"Document {i}: the quick brown fox jumps over the lazy dog {i} times, and the cat watches {i % 7} birds."
    for i in range(60)
)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from tiny_models import tiny_model

    from hf_minitron.quickstart.teacher import train_tokenizer

    folder = tmp_path_factory.mktemp("model")
    tokenizer = train_tokenizer(TEXT.split("\n\n"), vocab_size=300)
    model = tiny_model(
        "llama",
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    data = folder / "data.txt"
    data.write_text(TEXT)
    return folder, data, count_parameters(model.config)


def test_parse_budget():
    assert parse_budget("4B", 0, "x") == 4_000_000_000
    assert parse_budget("350m", 0, "x") == 350_000_000
    assert parse_budget("1.5e9", 0, "x") == 1_500_000_000
    assert parse_budget("50%", 1000, "x") == 500
    assert parse_budget(None, 0, "x") is None
    with pytest.raises(ValueError, match="target_params='four'"):
        parse_budget("four", 0, "target_params")


def test_search_cli_writes_ranking_card_and_model(tiny_folder, tmp_path, capsys):
    folder, data, params = tiny_folder
    out = tmp_path / "out"
    status = main([
        "search", str(folder), "--target_params", "50%", "--data", str(data), "--output", str(out),
        "--steps_per_candidate", "2", "--max_candidates", "3", "--seq_len", "16", "--calibration_samples", "4",
        "--per_device_train_batch_size", "2", "--eval_fraction", "0.2", "--output_dir", str(tmp_path / "runs"),
        "--disable_tqdm", "true", "--gradient_accumulation_steps", "2",
    ])  # fmt: skip
    assert status == 0
    record = json.loads((out / "hf_minitron.json").read_text())
    assert (
        record["distillation"]["tokens"] == 2 * 2 * 2 * 16
    )  # steps x batch x accumulation x seq_len (1 process)
    progress = json.loads((tmp_path / "runs" / "search_progress.json").read_text())
    assert {r["name"] for r in progress["ranking"]} == {
        r["name"] for r in json.loads((out / "search_results.json").read_text())["ranking"]
    }
    ranking = json.loads((out / "search_results.json").read_text())
    assert 1 <= len(ranking["ranking"]) <= 3
    for row in ranking["ranking"]:
        assert abs(row["params"] - params / 2) <= 0.05 * params / 2
        assert row["loss_after_retraining"] is not None
    best = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in best.parameters()) == ranking["ranking"][0]["params"]
    card = ModelCard.load(out / "README.md")
    assert "## Architecture search" in card.text and "| rank |" in card.text
    assert "pruned" in card.data.tags
    assert (out / "pruning_config.json").is_file()
    # stdout is our JSON alone: the Trainer's log lines go to stderr
    printed = json.loads(capsys.readouterr().out)
    assert printed["best"]["name"] == ranking["best"]


def test_search_cli_refuses_impossible_budget(tiny_folder, tmp_path, capsys):
    folder, data, _ = tiny_folder
    status = main(["search", str(folder), "--target-params", "200%", "--data", str(data), "--output",
                   str(tmp_path / "out"), "--steps_per_candidate", "0", "--seq_len", "16"])  # fmt: skip
    assert status == 2
    assert "larger than the model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_search_cli_rerun_resumes_finished_candidates(tiny_folder, tmp_path, monkeypatch):
    import hf_minitron.pruning as pruning

    folder, data, _ = tiny_folder
    args = ["search", str(folder), "--target_params", "50%", "--data", str(data), "--output", str(tmp_path / "out"),
            "--steps_per_candidate", "0", "--max_candidates", "3", "--seq_len", "16", "--calibration_samples", "4",
            "--eval_fraction", "0.2"]  # fmt: skip
    assert main(args) == 0
    first = json.loads((tmp_path / "out" / "search_results.json").read_text())
    real_prune, calls = pruning.prune_model, []
    monkeypatch.setattr(pruning, "prune_model", lambda *a: calls.append(1) or real_prune(*a))
    assert main(args) == 0  # same output: the progress file in out-runs/ is found
    assert len(calls) == 1  # only the best model is rebuilt; no candidate is pruned and evaluated again
    again = json.loads((tmp_path / "out" / "search_results.json").read_text())
    assert [(r["name"], r["loss_after_pruning"]) for r in again["ranking"]] == [
        (r["name"], r["loss_after_pruning"]) for r in first["ranking"]
    ]
