"""`hf-minitron prune` end to end on a tiny Llama: outputs, card, recipes, reuse of scores, atomic output."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import yaml
from cli_fixtures import make_workspace, prune_args
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_minitron.cli import COMMANDS, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("prune"))


@pytest.fixture(scope="module")
def pruned(ws):
    out = ws["root"] / "pruned"
    assert main(prune_args(ws, out)) == 0
    return out


def test_prune_writes_a_plain_transformers_checkpoint(pruned):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "pruning_config.json",
                 "importance.safetensors", "README.md", "hf_minitron.json"):  # fmt: skip
        assert (pruned / name).is_file(), name
    model = AutoModelForCausalLM.from_pretrained(pruned)
    assert (model.config.hidden_size, model.config.intermediate_size) == (48, 64)
    assert model.config.num_hidden_layers == 4 and model.config.head_dim == 8
    tokenizer = AutoTokenizer.from_pretrained(pruned)
    ids = tokenizer("def f(x): return x", return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] == len(tokenizer)
    assert json.loads((pruned / "pruning_config.json").read_text())["hidden_size"] == 48
    assert not [p for p in pruned.parent.iterdir() if p.name.startswith(".pruned.")]  # no staging leftovers


def test_prune_card_metadata_and_body(pruned):
    card = ModelCard.load(pruned / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "text-generation"
    assert {"pruned", "minitron", "hf-minitron"} <= set(card.data.tags)
    assert "distilled" not in card.data.tags
    assert card.data.base_model is None  # a local folder is not a Hub id
    text = card.text
    assert "| `hidden_size` | 64 | 48 |" in text and "| `intermediate_size` | 128 | 64 |" in text
    assert "hf-minitron prune" in text and "arXiv:2407.14679" in text and "arXiv:2408.11796" in text
    assert "8 samples of 32 tokens" in text


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed")
def test_stdout_is_the_json_alone_when_deepspeed_prints(ws, pruned, tmp_path):
    """DeepSpeed, imported by transformers/accelerate when the model is saved, logs its accelerator choice on the
    stdout of its first import on a machine without GPU (and its CPU communication op prints there): a command's
    stdout stays one JSON object that `json.loads` reads, for pipes such as `hf-minitron prune ... | jq`."""
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}  # the conftest's silencer off
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "hf_minitron.cli", "prune", str(ws["model"]), "--output", str(tmp_path / "out"),
           "--importance", str(pruned / "importance.safetensors"), "--intermediate-size", "96"]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["after"]["intermediate_size"] == 96


def test_prune_reuses_saved_importance_without_calibration(ws, pruned, tmp_path):
    out = tmp_path / "again"
    args = ["prune", str(ws["model"]), "--output", str(out), "--importance", str(pruned / "importance.safetensors"),
            "--intermediate-size", "96"]  # fmt: skip
    assert main(args) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    assert (model.config.hidden_size, model.config.intermediate_size) == (64, 96)


def test_prune_with_saved_scores_records_their_criterion(ws, tmp_path):
    first, again = tmp_path / "magnitude", tmp_path / "again"
    assert main(prune_args(ws, first, "--importance", "magnitude")) == 0
    assert (
        main(
            [
                "prune",
                str(ws["model"]),
                "--output",
                str(again),
                "--importance",
                str(first),
                "--hidden-size",
                "32",
            ]
        )
        == 0
    )
    record = json.loads((again / "hf_minitron.json").read_text())
    assert record["pruning"]["config"]["importance"] == "magnitude"
    assert record["pruning"]["importance"]["importance"] == "magnitude"
    assert json.loads((again / "pruning_config.json").read_text())["importance"] == "magnitude"


def test_cli_logs_info_only_with_verbose(ws, pruned, tmp_path, capsys):
    import logging

    logger = logging.getLogger("hf_minitron")
    level = logger.level
    try:
        assert main(["push", str(pruned), "--repo-id", "me/x", "--dry-run"]) == 0
        assert not logger.isEnabledFor(logging.INFO)
        assert main(["-v", "push", str(pruned), "--repo-id", "me/x", "--dry-run"]) == 0
        assert logger.isEnabledFor(logging.INFO)
    finally:
        logger.setLevel(level)


def test_recipe_values_and_command_line_override(ws, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": str(ws["model"]),
        "data": {"calibration_data": str(ws["train"]), "calibration_samples": 4, "seq_len": 32},
        "pruning": {"hidden_size": 48, "intermediate_size": 96},
        "distillation": {"learning_rate": 1e-4},  # other sections are checked but not used by prune
    }))  # fmt: skip
    out = tmp_path / "out"
    assert main(["prune", "--config", str(recipe), "--output", str(out), "--hidden-size", "32"]) == 0
    config = AutoModelForCausalLM.from_pretrained(out).config
    assert (config.hidden_size, config.intermediate_size) == (32, 96)  # flag wins, recipe fills the rest


@pytest.mark.parametrize(
    "recipe",
    [
        {"pruning": {"hiden_size": 32}},
        {"prunning": {"hidden_size": 32}},
        {"distillation": {"learning_rat": 1.0}},
    ],
)
def test_unknown_recipe_keys_are_errors(ws, tmp_path, recipe, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(SystemExit) as e:
        main(["prune", str(ws["model"]), "--config", str(path), "--output", str(tmp_path / "o")])
    assert e.value.code == 2
    assert "unknown" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_calibration_data_is_refused(ws, tmp_path, capsys):
    assert main(["prune", str(ws["model"]), "--output", str(tmp_path / "o"), "--hidden-size", "32"]) == 2
    assert "calibration" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_target_is_refused_before_any_output(ws, tmp_path, capsys):
    args = prune_args(ws, tmp_path / "o")
    args[args.index("--hidden-size") + 1] = "4096"
    assert main(args) == 2
    assert "hidden_size" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_failure_while_writing_leaves_no_half_written_folder(ws, tmp_path, monkeypatch):
    import hf_minitron.hub

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hf_minitron.hub, "write_model_card", boom)  # fails after the model was saved
    out = tmp_path / "o"
    with pytest.raises(RuntimeError, match="disk full"):
        main(prune_args(ws, out))
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_the_previous_output_intact(ws, tmp_path, monkeypatch):
    import hf_minitron.hub

    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("previous run")
    monkeypatch.setattr(
        hf_minitron.hub, "write_model_card", lambda *a, **k: (_ for _ in ()).throw(OSError("x"))
    )
    with pytest.raises(OSError):
        main(prune_args(ws, out))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["o"]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_help(command, capsys):
    if command == "search":
        pytest.importorskip("hf_minitron.cli.search")
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert command in capsys.readouterr().out


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out
