"""Model cards and `hf-minitron push` without network: one commit with the folder's files; the token is never
written anywhere."""

from __future__ import annotations

import json

import pytest
from cli_fixtures import SENTINEL_TOKEN, all_files_text, distill_args, make_workspace, prune_args
from huggingface_hub import HfApi, ModelCard

from hf_minitron.cli import main
from hf_minitron.hub import list_upload_files, render_model_card, template_path


class FakeHub:
    """Stands in for the Hub: records create_repo / create_commit calls and the files each commit carries."""

    def __init__(self, monkeypatch):
        self.repos, self.commits = [], []
        hub = self

        def create_repo(self, repo_id, *, private=False, exist_ok=False, repo_type=None, **kwargs):
            hub.repos.append({"repo_id": repo_id, "private": private, "exist_ok": exist_ok})
            return f"https://huggingface.co/{repo_id}"

        def create_commit(self, repo_id, operations, *, commit_message, **kwargs):
            files = {}
            for op in operations:
                with open(op.path_or_fileobj, "rb") as f:
                    files[op.path_in_repo] = f.read()
            hub.commits.append({"repo_id": repo_id, "message": commit_message, "files": files})

            class Info:
                commit_url = f"https://huggingface.co/{repo_id}/commit/abc123"
                oid = "abc123"

            return Info()

        def no_network(*args, **kwargs):
            raise AssertionError("network call during the test")

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        for name in ("upload_file", "upload_folder", "preupload_lfs_files", "repo_info", "whoami"):
            monkeypatch.setattr(HfApi, name, no_network)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_TOKEN", SENTINEL_TOKEN)
    ws = make_workspace(tmp_path_factory.mktemp("hub"))
    assert main(prune_args(ws, ws["root"] / "pruned")) == 0
    assert (
        main(
            distill_args(ws, ws["pruned"] if "pruned" in ws else ws["root"] / "pruned", ws["root"] / "model")
        )
        == 0
    )
    assert main(["eval", str(ws["root"] / "model"), "--data", str(ws["held"]), "--seq-len", "32"]) == 0
    mp.undo()
    return ws


def test_push_uploads_the_folder_as_one_commit(ws, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", SENTINEL_TOKEN)
    hub = FakeHub(monkeypatch)
    folder = ws["root"] / "model"
    assert main(["push", str(folder), "--repo-id", "me/tiny-minitron", "--private"]) == 0
    assert hub.repos == [{"repo_id": "me/tiny-minitron", "private": True, "exist_ok": True}]
    (commit,) = hub.commits
    assert commit["repo_id"] == "me/tiny-minitron"
    expected = {p for p, _ in list_upload_files(folder)}
    assert set(commit["files"]) == expected
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "hf_minitron.json"} <= expected
    card = commit["files"]["README.md"].decode()
    assert 'from_pretrained("me/tiny-minitron")' in card  # the usage snippet names the repo
    out = capsys.readouterr()
    assert json.loads(out.out)["commit_url"].endswith("abc123")
    assert SENTINEL_TOKEN not in out.out + out.err
    for content in commit["files"].values():
        assert SENTINEL_TOKEN.encode() not in content


def test_push_dry_run_lists_files_and_touches_no_network(ws, monkeypatch, capsys):
    hub = FakeHub(monkeypatch)
    monkeypatch.setattr(HfApi, "create_repo", lambda *a, **k: pytest.fail("network"))
    monkeypatch.setattr(HfApi, "create_commit", lambda *a, **k: pytest.fail("network"))
    folder = ws["root"] / "model"
    before = {p: (folder / p).read_bytes() for p, _ in list_upload_files(folder)}
    assert main(["push", str(folder), "--repo-id", "me/x", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would upload" in out and "model.safetensors" in out
    assert hub.commits == [] and hub.repos == []
    assert {p: (folder / p).read_bytes() for p, _ in list_upload_files(folder)} == before  # nothing rewritten


def test_push_skips_hidden_files_and_checkpoints(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("x")
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / "optimizer.pt").write_text("x")
    (tmp_path / ".o.tmp-123").mkdir()
    assert list_upload_files(tmp_path) == [("config.json", 2)]


def test_token_never_written_to_any_file(ws):
    assert SENTINEL_TOKEN not in all_files_text(ws["root"])


def test_card_of_the_pipeline_has_the_required_metadata(ws):
    card = ModelCard.load(ws["root"] / "model" / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert set(data["tags"]) >= {"pruned", "minitron", "hf-minitron", "distilled"}
    (index,) = data["model-index"]
    metric = index["results"][0]["metrics"][0]
    assert metric["type"] == "perplexity" and metric["value"] > 1


def test_template_is_found_and_renders_hub_metadata():
    assert template_path().name == "model_card.md" and template_path().is_file()
    record = {
        "model_name": "Llama-3.1-Minitron-4B-Width",
        "base_model": "meta-llama/Llama-3.1-8B",
        "license": "llama3.1",
        "datasets": ["HuggingFaceFW/fineweb-edu"],
        "architecture": {
            "before": {"parameters": 8_030_261_248, "hidden_size": 4096},
            "after": {"parameters": 4_512_782_336, "hidden_size": 3072},
        },  # fmt: skip
        "distillation": {"teacher": "meta-llama/Llama-3.1-8B", "data": "x", "tokens": 94_000_000_000},
        "evaluations": [
            {"dataset": "wikitext", "split": "test", "metric": "perplexity", "value": 7.5},
            {"dataset": "mmlu", "metric": "acc", "value": 0.605, "dataset_type": "cais/mmlu"},
        ],  # fmt: skip
        "plot": "loss_curve.png",
        "commands": [
            "hf-minitron prune meta-llama/Llama-3.1-8B --config llama-3.1-8b-to-4b-width --output o"
        ],
    }
    card = render_model_card(record, repo_id="me/Llama-3.1-Minitron-4B-Width")
    parsed = ModelCard(str(card))
    assert parsed.data.base_model == "meta-llama/Llama-3.1-8B"
    assert parsed.data.license == "llama3.1"
    assert parsed.data.datasets == ["HuggingFaceFW/fineweb-edu"]
    assert "distilled" in parsed.data.tags
    results = {(r.dataset_type, r.metric_type): r.metric_value for r in parsed.data.eval_results}
    assert results == {("wikitext", "perplexity"): 7.5, ("cais/mmlu", "acc"): 0.605}
    text = parsed.text
    assert "| parameters | 8.03B | 4.51B |" in text and "![" in text and "llama3.1" in text
    assert "56% of the parameters" in text
