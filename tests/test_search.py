"""search_architectures and iterative pruning end to end on tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from tiny_models import random_batches, tiny_model
from transformers import AutoModelForCausalLM

from hf_minitron import PruningConfig, estimate_importance, prune_model
from hf_minitron.search import SearchResult, count_parameters, search_architectures


def _blocks(n, seed, seq_len=16):
    ids = torch.cat([b["input_ids"] for b in random_batches(n, batch_size=2, seq_len=seq_len, seed=seed)])
    return Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * seq_len] * len(ids), "labels": ids.tolist()}
    )


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("llama")
    target = count_parameters(model.config) // 2
    config = PruningConfig(target_params=target)
    scores = estimate_importance(model, random_batches(2), config)
    return model, scores, target


def test_target_params_scores_every_axis_and_prunes(setup):
    model, scores, target = setup
    for name in ("neurons", "heads", "channels", "layers"):
        assert getattr(scores, name) is not None
    pruned = prune_model(__import__("copy").deepcopy(model), PruningConfig(target_params=target), scores)
    n = sum(p.numel() for p in pruned.parameters())
    assert n == count_parameters(pruned.config)
    assert abs(n - target) <= 0.05 * target


def test_search_ranks_and_every_candidate_reloads(setup, tmp_path):
    model, scores, target = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    eval_ds = _blocks(2, seed=7)
    result = search_architectures(
        model, scores, target, eval_dataset=eval_ds, steps_per_candidate=0, max_candidates=5, seed=1
    )
    assert isinstance(result, SearchResult) and 1 <= len(result.ranking) <= 5
    losses = [r.loss for r in result.ranking]
    assert losses == sorted(losses)
    assert isinstance(result.best, PruningConfig) and result.best.target_params is None
    for k, v in model.state_dict().items():  # the teacher is untouched
        assert torch.equal(v, before[k])
    for i, r in enumerate(result.ranking):
        pruned = prune_model(__import__("copy").deepcopy(model), r.config, scores)
        pruned.save_pretrained(tmp_path / f"c{i}")
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / f"c{i}")
        assert sum(p.numel() for p in reloaded.parameters()) == r.candidate.params
        ids = eval_ds[:1]["input_ids"]
        with torch.no_grad():
            torch.testing.assert_close(reloaded(torch.tensor(ids)).logits, pruned(torch.tensor(ids)).logits)
    result.save(tmp_path / "ranking.json")
    data = json.loads((tmp_path / "ranking.json").read_text())
    assert data["best"] == result.ranking[0].candidate.name and len(data["ranking"]) == len(result.ranking)
    assert "| rank |" in result.to_markdown()


def test_search_is_deterministic(setup):
    model, scores, target = setup
    eval_ds = _blocks(1, seed=3)
    runs = [
        search_architectures(
            model, scores, target, eval_dataset=eval_ds, steps_per_candidate=0, max_candidates=3, seed=5
        )
        for _ in range(2)
    ]
    assert [r.to_dict() | {"ranking": None} for r in runs][0] == [
        r.to_dict() | {"ranking": None} for r in runs
    ][1]
    assert [(r.candidate.name, r.loss) for r in runs[0].ranking] == [
        (r.candidate.name, r.loss) for r in runs[1].ranking
    ]


def test_search_requires_eval_data(setup):
    model, scores, target = setup
    with pytest.raises(ValueError, match="eval_dataset"):
        search_architectures(model, scores, target, steps_per_candidate=0)
    with pytest.raises(ValueError, match="train_dataset"):
        search_architectures(model, scores, target, eval_dataset=_blocks(1, 0), steps_per_candidate=2)
