"""Model cards and `hf-minitron push` without network: one commit with the folder's files; the token is never
written anywhere."""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from pathlib import Path

import pytest
from cli_fixtures import SENTINEL_TOKEN, all_files_text, distill_args, make_workspace, prune_args
from huggingface_hub import HfApi, ModelCard, constants

from hf_minitron.cli import main
from hf_minitron.hub import (
    PICKLE_SUFFIXES,
    list_upload_files,
    push_folder,
    recorded_command,
    render_model_card,
    template_path,
    write_model_card,
)

# Given on the command line only (not in the environment), unlike SENTINEL_TOKEN which is HF_TOKEN.
FLAG_TOKEN = "hf_FLAGtokenGIVENonTHEcommandLINE98765"
SECRETS = (SENTINEL_TOKEN, FLAG_TOKEN)


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
    distill = distill_args(ws, ws["root"] / "pruned", ws["root"] / "model", "--hub_token", FLAG_TOKEN)
    assert main(distill) == 0
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
    for content in commit["files"].values():  # every uploaded file, the weights included
        for secret in SECRETS:
            assert secret.encode() not in content
    assert not [p for p in commit["files"] if p.endswith(PICKLE_SUFFIXES)]


def test_push_dry_run_lists_files_and_touches_no_network(ws, monkeypatch, capsys):
    hub = FakeHub(monkeypatch)
    monkeypatch.setattr(HfApi, "create_repo", lambda *a, **k: pytest.fail("network"))
    monkeypatch.setattr(HfApi, "create_commit", lambda *a, **k: pytest.fail("network"))
    folder = ws["root"] / "model"
    before = {p: (folder / p).read_bytes() for p, _ in list_upload_files(folder)}
    assert main(["push", str(folder), "--repo-id", "me/x", "--dry-run"]) == 0
    printed = capsys.readouterr()
    assert "would upload" in printed.err  # stdout is the JSON alone
    assert "model.safetensors" in {f["path"] for f in json.loads(printed.out)["files"]}
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
    # Pickles aside (never uploaded, see test_push_skips_pickles; the trainer stops writing training_args.bin),
    # no file written by prune / distill / eval holds the token given by environment or by flag.
    text = all_files_text(ws["root"], skip_suffixes=PICKLE_SUFFIXES)
    for secret in SECRETS:
        assert secret not in text
    assert not [
        p for p in (ws["root"] / "pruned").rglob("*") if p.suffix in PICKLE_SUFFIXES
    ]  # prune: no pickle
    record = json.loads((ws["root"] / "model" / "hf_minitron.json").read_text())
    assert "--hub_token '<redacted>'" in record["commands"][-1]
    assert "--hub_token '<redacted>'" in (ws["root"] / "model" / "README.md").read_text()


@pytest.mark.parametrize(
    "argv, hidden",
    [
        (["--hub_token", FLAG_TOKEN], ["--hub_token", "<redacted>"]),
        (["--hub-token", "secret-value-123"], ["--hub-token", "<redacted>"]),
        (["--token", "secret-value-123"], ["--token", "<redacted>"]),
        (["--token=secret-value-123"], ["--token=<redacted>"]),
        (["--hub_token=" + FLAG_TOKEN], ["--hub_token=<redacted>"]),
        (["--run_name", "x" + FLAG_TOKEN], ["--run_name", "x<redacted>"]),  # anything shaped like a token
        (["--push_to_hub", "--hub_token", "s3cr3t-value"], ["--push_to_hub", "--hub_token", "<redacted>"]),
        (["--max_new_tokens", "5"], ["--max_new_tokens", "5"]),  # not a token flag
    ],
)
def test_recorded_command_redacts_every_token_flag(argv, hidden, monkeypatch, tmp_path):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "stored_tokens"))
    command = recorded_command(["hf-minitron", "distill", *argv])
    assert command == shlex.join(["hf-minitron", "distill", *hidden])
    assert "secret-value" not in command and FLAG_TOKEN not in command and "s3cr3t" not in command


def test_recorded_command_redacts_env_and_stored_tokens(monkeypatch, tmp_path):
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "legacy-env-token-abc")
    (tmp_path / "token").write_text("stored-login-token-xyz\n")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    command = recorded_command(["hf-minitron", "eval", "legacy-env-token-abc", "stored-login-token-xyz"])
    assert "legacy-env-token" not in command and "stored-login" not in command


def _folder_with(tmp_path, **files) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    for name, content in files.items():
        (folder / name.replace("__", ".")).write_bytes(content)
    return folder


@pytest.mark.parametrize("how", ["flag", "env", "stored"])
def test_push_refuses_a_file_holding_the_active_token(how, tmp_path, monkeypatch, capsys):
    token = "hf_ACTIVEtokenUSEDbyTHISpush0123456789"
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "stored_tokens"))
    flag = []
    if how == "flag":
        flag = ["--token", token]
    elif how == "env":
        monkeypatch.setenv("HF_TOKEN", token)
    else:
        (tmp_path / "token").write_text(token)
    # Not shaped like a token where it is written (a config value), so only the scan for the active token finds it.
    folder = _folder_with(tmp_path, notes__json=json.dumps({"auth": token[3:], "full": token}).encode())
    hub = FakeHub(monkeypatch)
    assert main(["push", str(folder), "--repo-id", "me/x", *flag]) == 2
    err = capsys.readouterr().err
    assert "refusing to upload" in err and "notes.json" in err and token not in err
    assert hub.commits == [] and hub.repos == []
    (folder / "notes.json").write_text("{}")
    assert main(["push", str(folder), "--repo-id", "me/x", *flag]) == 0
    (commit,) = hub.commits
    assert set(commit["files"]) == {"config.json", "notes.json"}


def test_push_skips_pickles_and_lists_them(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    pickles = [
        "training_args.bin",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        "pytorch_model.bin",
        "x.pkl",
    ]
    folder = _folder_with(tmp_path, **{p.replace(".", "__"): b"\x80\x04pickle" for p in pickles})
    hub = FakeHub(monkeypatch)
    assert main(["push", str(folder), "--repo-id", "me/x"]) == 0
    (commit,) = hub.commits
    assert set(commit["files"]) == {"config.json"}
    out = capsys.readouterr()
    for name in pickles:
        assert f"skipped {name}" in out.err
    assert {s["path"] for s in json.loads(out.out)["skipped"]} == set(pickles)
    dry = push_folder(folder, "me/x", dry_run=True)
    assert [f["path"] for f in dry["files"]] == ["config.json"] and len(dry["skipped"]) == len(pickles)


def _machine_paths() -> list[str]:
    return [
        p
        for p in {str(Path.home()), tempfile.gettempdir(), os.path.realpath(tempfile.gettempdir())}
        if p != "/"
    ]


def test_cards_and_records_hold_no_machine_path_and_metadata_names_hub_ids_only(ws):
    root = str(ws["root"])
    for folder in ("pruned", "model"):
        for name in ("README.md", "hf_minitron.json"):
            text = (ws["root"] / folder / name).read_text()
            assert root not in text
            for prefix in _machine_paths():
                assert prefix + "/" not in text, (folder, name, prefix)
    card = ModelCard.load(ws["root"] / "model" / "README.md")
    data = card.data.to_dict()
    assert "model-index" not in data and not data.get("datasets")  # every input was a local file
    assert "base_model" not in data
    assert "`held.txt`" in card.text and "train.txt" in card.text  # described by their file names


def test_no_uploaded_file_holds_a_machine_path(ws, monkeypatch):
    hub = FakeHub(monkeypatch)
    for folder in ("pruned", "model"):
        assert main(["push", str(ws["root"] / folder), "--repo-id", f"me/{folder}"]) == 0
    for commit in hub.commits:
        assert "importance.safetensors" in commit["files"] or "model.safetensors" in commit["files"]
        for name, content in commit["files"].items():
            assert str(ws["root"]).encode() not in content, name


def test_model_index_keeps_hub_ids_and_drops_local_files(tmp_path):
    local = tmp_path / "calib.txt"
    local.write_text("x")
    record = {
        "base_model": str(tmp_path / "teacher"),
        "datasets": ["HuggingFaceFW/fineweb-edu", str(local)],
        "evaluations": [
            {"dataset": str(local), "metric": "perplexity", "value": 9.0},
            {"dataset": str(tmp_path), "metric": "perplexity", "value": 8.0},  # a local folder
            {"dataset": "wikitext", "split": "test", "metric": "perplexity", "value": 7.5},
        ],
        "pruning": {"calibration_data": str(local), "calibration_samples": 8, "seq_len": 32},
        "commands": [f"hf-minitron prune {tmp_path / 'teacher'} --calibration-data {local} --output ~/x/out"],
    }
    write_model_card(tmp_path, record)
    for name in ("README.md", "hf_minitron.json"):
        text = (tmp_path / name).read_text()
        assert str(tmp_path) not in text and "~/x" not in text
    card = ModelCard.load(tmp_path / "README.md")
    assert [(r.dataset_name, r.dataset_type) for r in card.data.eval_results] == [("wikitext", "wikitext")]
    assert card.data.datasets == ["HuggingFaceFW/fineweb-edu"] and card.data.base_model is None
    assert (
        "`calib.txt`" in card.text and "hf-minitron prune teacher --calibration-data calib.txt" in card.text
    )


def test_card_of_the_pipeline_has_the_required_metadata(ws):
    card = ModelCard.load(ws["root"] / "model" / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert set(data["tags"]) >= {"pruned", "minitron", "hf-minitron", "distilled"}
    # The held-out data is a local file: in the text, not in the Hub metadata (model-index names Hub ids only).
    assert "model-index" not in data
    assert "| `held.txt` | perplexity |" in card.text


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
