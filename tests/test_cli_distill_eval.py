"""`hf-minitron distill` and `hf-minitron eval` end to end on a tiny Llama with a tokenizer trained here."""

from __future__ import annotations

import json
import math

import pytest
import torch
from cli_fixtures import distill_args, make_workspace, prune_args
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_minitron.cli import main


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("distill"))
    assert main(prune_args(ws, ws["root"] / "pruned")) == 0
    ws["pruned"] = ws["root"] / "pruned"
    return ws


@pytest.fixture(scope="module")
def distilled(ws):
    out = ws["root"] / "distilled"
    assert main(distill_args(ws, ws["pruned"], out)) == 0
    return out


def test_distill_saves_student_tokenizer_and_updated_card(ws, distilled):
    model = AutoModelForCausalLM.from_pretrained(distilled)
    assert (model.config.hidden_size, model.config.intermediate_size) == (48, 64)
    assert (
        AutoTokenizer.from_pretrained(distilled).get_vocab()
        == AutoTokenizer.from_pretrained(ws["pruned"]).get_vocab()
    )
    assert (distilled / "pruning_config.json").is_file()
    pruned_weights = AutoModelForCausalLM.from_pretrained(ws["pruned"]).model.embed_tokens.weight
    assert not torch.equal(model.model.embed_tokens.weight, pruned_weights)  # it trained
    card = ModelCard.load(distilled / "README.md")
    assert {"pruned", "minitron", "hf-minitron", "distilled"} <= set(card.data.tags)
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.eval_results is None  # a local file is no Hub dataset: named in the text only
    (row,) = [line for line in card.text.splitlines() if line.startswith("| `held.txt` | perplexity |")]
    assert float(row.split("|")[3]) > 1
    record = json.loads((distilled / "hf_minitron.json").read_text())
    assert record["distillation"]["tokens"] == 3 * 4 * 32
    assert [c.split()[1] for c in record["commands"]] == ["prune", "distill"]
    assert "Tokens: 384" in card.text and "forward_kl" in card.text
    assert not (
        ws["root"] / "distilled-checkpoints"
    ).exists()  # no checkpoint was written: nothing left behind


def test_distill_failure_leaves_no_half_written_folder(ws, tmp_path, monkeypatch):
    import hf_minitron.hub

    def boom(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(hf_minitron.hub, "write_model_card", boom)  # after the student was saved
    out = tmp_path / "d"
    with pytest.raises(RuntimeError, match="interrupted"):
        main(distill_args(ws, ws["pruned"], out, "--output_dir", str(tmp_path / "ckpt")))
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".d.")]


def test_distill_needs_data(ws, tmp_path, capsys):
    args = distill_args(ws, ws["pruned"], tmp_path / "d")
    i = args.index("--data")
    del args[i : i + 2]
    assert main(args) == 2
    assert "--data" in capsys.readouterr().err


def _reference_loss(model_dir, text_file, seq_len):
    """Mean next-token cross-entropy computed by hand (not with the model's loss)."""
    from hf_minitron.data import load_texts

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = []
    for doc in load_texts(text_file):
        ids += tok(doc, add_special_tokens=False).input_ids + [tok.eos_token_id]
    n = len(ids) // seq_len
    blocks = torch.tensor(ids[: n * seq_len]).view(n, seq_len)
    with torch.no_grad():
        logits = model(blocks).logits[:, :-1]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), blocks[:, 1:].reshape(-1)
    ).item()


def test_eval_prints_perplexity_json_and_updates_the_card(ws, distilled, capsys, tmp_path):
    out_json = tmp_path / "eval.json"
    assert main(["eval", str(distilled), "--data", str(ws["held"]), "--seq-len", "32", "--batch-size", "3",
                 "--output", str(out_json)]) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out_json.read_text())
    ref = _reference_loss(distilled, ws["held"], 32)
    assert printed["loss"] == pytest.approx(ref, rel=1e-4)
    assert printed["perplexity"] == pytest.approx(math.exp(ref), rel=1e-4)
    assert printed["card_updated"] is True
    card = ModelCard.load(distilled / "README.md")
    assert card.data.eval_results is None  # the held-out data is a local file: in the text, not the metadata
    record = json.loads((distilled / "hf_minitron.json").read_text())
    (ev,) = [e for e in record["evaluations"] if e["dataset"] == "held.txt"]
    assert ev["local"] and ev["value"] == pytest.approx(printed["perplexity"])
    assert f"| `held.txt` | perplexity | {printed['perplexity']:.4g} |" in card.text
    assert "distilled" in card.data.tags  # the rest of the card is kept


def test_eval_on_a_plain_model_folder_leaves_it_alone(ws, capsys):
    assert main(["eval", str(ws["model"]), "--data", str(ws["held"]), "--seq-len", "32"]) == 0
    assert json.loads(capsys.readouterr().out)["card_updated"] is False
    assert not (ws["model"] / "README.md").exists()


def test_eval_tasks_without_lm_eval_is_a_clear_error(ws, capsys):
    import importlib.util

    if importlib.util.find_spec("lm_eval") is not None:
        pytest.skip("lm_eval is installed")
    assert main(["eval", str(ws["model"]), "--tasks", "hellaswag"]) == 2
    assert "lm-evaluation-harness" in capsys.readouterr().err
