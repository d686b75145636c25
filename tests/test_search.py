"""search_architectures and iterative pruning end to end on tiny models."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from datasets import Dataset
from tiny_models import random_batches, tiny_model
from transformers import AutoModelForCausalLM

from hf_minitron import PruningConfig, estimate_importance, prune_model
from hf_minitron.search import SearchResult, count_parameters, search_architectures
from hf_minitron.search.run import evaluate_lm_loss


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


def _two_good_one_bad(model):
    from hf_minitron.search.space import Candidate

    good = [
        Candidate.from_shape(model.config, {"intermediate_size": 64}),
        Candidate.from_shape(model.config, {"num_hidden_layers": 2}),
    ]
    # hidden 60 with 8 heads: LlamaConfig refuses hidden_size % num_attention_heads != 0, so pruning to it raises.
    # Built by hand (not from_shape), so the test holds whether or not the space validates shapes itself.
    bad = dataclasses.replace(good[0], sizes={**good[0].sizes, "hidden_size": 60, "intermediate_size": 128})
    return [good[0], bad, good[1]]


def test_a_failing_candidate_is_recorded_and_the_others_are_kept(setup, tmp_path):
    model, scores, target = setup
    progress = tmp_path / "progress.json"
    candidates = _two_good_one_bad(model)
    result = search_architectures(model, scores, target, eval_dataset=_blocks(1, 2), steps_per_candidate=0,
                                  candidates=candidates, results_file=progress)  # fmt: skip
    assert sorted(r.candidate.name for r in result.ranking) == sorted(
        c.name for c in (candidates[0], candidates[2])
    )
    (failure,) = result.failures
    assert (
        failure.candidate.name == candidates[1].name and failure.error and failure.loss_after_pruning is None
    )
    saved = json.loads(progress.read_text())
    assert len(saved["ranking"]) == 2 and saved["failures"][0]["error"] == failure.error
    assert result.to_dict()["failures"][0]["name"] == candidates[1].name and "failed" in result.to_markdown()


def test_results_are_written_as_each_candidate_ends_and_a_rerun_resumes(setup, tmp_path, monkeypatch):
    import hf_minitron.pruning as pruning

    model, scores, target = setup
    progress = tmp_path / "progress.json"
    candidates = _two_good_one_bad(model)
    real_prune, calls = pruning.prune_model, []

    def crash_on_third(m, config, s):  # the process dies during the third candidate
        calls.append(config.hidden_size)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_prune(m, config, s)

    monkeypatch.setattr(pruning, "prune_model", crash_on_third)
    kwargs = dict(
        eval_dataset=_blocks(1, 2), steps_per_candidate=0, candidates=candidates, results_file=progress
    )
    with pytest.raises(KeyboardInterrupt):
        search_architectures(model, scores, target, **kwargs)
    saved = json.loads(progress.read_text())  # what ended before the crash is on disk
    assert [r["name"] for r in saved["ranking"]] == [candidates[0].name]
    assert [r["name"] for r in saved["failures"]] == [candidates[1].name]

    calls.clear()
    monkeypatch.setattr(
        pruning, "prune_model", lambda m, c, s: calls.append(c.hidden_size) or real_prune(m, c, s)
    )
    resumed = search_architectures(model, scores, target, keep_best_model=True, **kwargs)
    # The finished candidate is not redone, unless it is the best (then its model is rebuilt).
    assert calls[:2] == [c.hidden_size for c in candidates[1:]]
    assert len(calls) == 2 + (resumed.ranking[0].candidate.name == candidates[0].name)
    best = resumed.best_model  # rebuilt when the best was finished by the first run
    assert (
        best is not None and best.config.num_hidden_layers == resumed.ranking[0].candidate.num_hidden_layers
    )
    assert evaluate_lm_loss(best, kwargs["eval_dataset"]) == pytest.approx(resumed.ranking[0].loss)
    fresh = search_architectures(model, scores, target, **{**kwargs, "results_file": tmp_path / "other.json"})
    assert [(r.candidate.name, r.loss) for r in resumed.ranking] == [
        (r.candidate.name, r.loss) for r in fresh.ranking
    ]


def test_search_takes_any_dataset_a_trainer_takes(setup, tmp_path):
    from hf_minitron.distillation import DistillationArguments

    model, scores, target = setup
    rows = [dict(r) for r in _blocks(2, seed=4)]

    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            return {k: torch.tensor(v) for k, v in rows[i].items()}

    candidates = _two_good_one_bad(model)[:1]
    args = DistillationArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, use_cpu=True,
                                 report_to=[], dataloader_pin_memory=False)  # fmt: skip
    results = [
        search_architectures(
            model,
            scores,
            target,
            train_dataset=train,
            eval_dataset=eval_ds,
            args=args,
            steps_per_candidate=1,
            candidates=candidates,
            results_file=None,
        )  # fmt: skip
        for train, eval_ds in ((Plain(), rows), (rows, Plain()), (_blocks(2, seed=4), _blocks(2, seed=4)))
    ]
    losses = [r.ranking[0].loss_after_pruning for r in results]
    assert losses[0] == pytest.approx(losses[1]) == pytest.approx(losses[2])
    assert all(r.ranking[0].loss_after_retraining is not None for r in results)
