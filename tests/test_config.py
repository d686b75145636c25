"""PruningConfig: defaults, JSON round trip, tolerance of unknown keys, validation messages."""

from __future__ import annotations

import json
import logging

import pytest
from tiny_models import tiny_config

from hf_minitron.config import CONFIG_NAME, PruningConfig


def test_defaults_follow_minitron_and_the_criteria_benchmark():
    c = PruningConfig()
    assert (c.depth_metric, c.batch_aggregation, c.sequence_aggregation) == ("block_importance", "l2", "mean")
    # importance: Minitron's forward-only criterion, the winner right after pruning on real pretrained weights
    assert (c.importance, c.width_multiple, c.head_carry_over, c.target_params) == (
        "activation",
        64,
        False,
        None,
    )
    assert all(getattr(c, f) is None for f in ("hidden_size", "intermediate_size", "num_hidden_layers"))


def test_round_trip_sorted_json(tmp_path):
    c = PruningConfig(hidden_size=32, layers_to_drop=(3, 1), depth_metric="perplexity", head_carry_over=True)
    path = c.save_pretrained(tmp_path)
    assert path.endswith(CONFIG_NAME)
    text = open(path).read()
    assert list(json.loads(text)) == sorted(json.loads(text))
    loaded = PruningConfig.from_pretrained(tmp_path)
    assert loaded == c and loaded.layers_to_drop == [3, 1]
    assert PruningConfig.from_pretrained(path) == c
    assert PruningConfig.from_dict(json.loads(c.to_json_string())) == c


def test_unknown_keys_warn_once_and_load(tmp_path, caplog):
    data = {**PruningConfig(hidden_size=8).to_dict(), "future_knob": 1, "another": "x"}
    (tmp_path / CONFIG_NAME).write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="hf_minitron.config"):
        c = PruningConfig.from_pretrained(tmp_path)
    assert c.hidden_size == 8
    warnings = [r for r in caplog.records if "unknown keys" in r.message]
    assert len(warnings) == 1 and "another" in warnings[0].message and "future_knob" in warnings[0].message


def test_push_to_hub_uploads_the_json(monkeypatch):
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["repo"] = (repo_id, exist_ok)

        def upload_file(self, path_or_fileobj, path_in_repo, repo_id, commit_message, revision):
            calls["upload"] = (json.loads(path_or_fileobj), path_in_repo, repo_id)
            return "commit"

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    assert PruningConfig(hidden_size=16).push_to_hub("me/pruned", token="t") == "commit"
    assert calls["repo"] == ("me/pruned", True)
    assert calls["upload"][0]["hidden_size"] == 16 and calls["upload"][1:] == (CONFIG_NAME, "me/pruned")


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(hidden_size=0), "hidden_size"),
        (dict(intermediate_size=-3), "intermediate_size"),
        (dict(num_hidden_layers=2.5), "num_hidden_layers"),
        (dict(target_params=0), "target_params"),
        (dict(width_multiple=0), "width_multiple"),
        (dict(depth_metric="cosine"), "depth_metric"),
        (dict(batch_aggregation="max"), "batch_aggregation"),
        (dict(sequence_aggregation="var"), "sequence_aggregation"),
        (dict(importance="random"), "importance"),
        (dict(head_carry_over="yes"), "head_carry_over"),
        (dict(layers_to_drop=[1, 1]), "layers_to_drop"),
        (dict(layers_to_drop=[-1]), "layers_to_drop"),
        (dict(num_attention_heads=6, num_key_value_heads=4), "num_attention_heads"),
    ],
)
def test_invalid_settings_name_field_value_and_range(kwargs, field):
    with pytest.raises(ValueError, match=rf"{field}=.*allowed"):
        PruningConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(hidden_size=65), r"hidden_size=65 .*1\.\.64"),
        (dict(num_hidden_layers=5), r"num_hidden_layers=5 .*1\.\.4"),
        (dict(num_key_value_heads=8), r"num_key_value_heads=8 .*1\.\.4"),
        (dict(num_attention_heads=16, num_key_value_heads=4), r"num_attention_heads=16"),
        (dict(num_attention_heads=6), r"num_attention_heads=6 .*multiple of num_key_value_heads=4"),
        (dict(num_attention_heads=8, num_key_value_heads=2), r"num_attention_heads=8 .*2, 4"),
        (dict(layers_to_drop=[4]), r"layers_to_drop=\[4\] .*0\.\.3"),
        (dict(layers_to_drop=[0, 1, 2, 3]), r"layers_to_drop=.*at most 3"),
        (dict(layers_to_drop=[0], num_hidden_layers=2), r"num_hidden_layers=2 .*None or 3"),
    ],
)
def test_validate_for_a_model(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PruningConfig(**kwargs).validate_for(tiny_config("llama"))


def _heads(config, model_config):
    sizes = config.target_sizes(model_config)
    return sizes["num_attention_heads"], sizes["num_key_value_heads"]


def test_resolve_heads():
    gqa, mha = tiny_config("llama"), tiny_config("llama", num_key_value_heads=8)
    assert _heads(PruningConfig(), gqa) == (8, 4)
    assert _heads(PruningConfig(num_key_value_heads=2), gqa) == (4, 2)
    assert _heads(PruningConfig(num_attention_heads=4), gqa) == (4, 4)
    assert _heads(PruningConfig(num_attention_heads=4), mha) == (4, 4)
    PruningConfig(layers_to_drop=[0], num_hidden_layers=3).validate_for(gqa)
