"""Running the search: prune every candidate from one set of scores, retrain briefly by distillation, rank."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from hf_minitron.counting import count_parameters, shape_of
from hf_minitron.io import atomic_write_text
from hf_minitron.search.space import FAMILIES, Candidate, effective_multiple, enumerate_candidates

logger = logging.getLogger(__name__)

PROGRESS_NAME = "search_progress.json"


@dataclass
class CandidateResult:
    """
    One searched shape and how it did.

    Args:
        candidate (`Candidate`): The shape and its costs.
        config (`PruningConfig`): The config that prunes the model to it.
        loss_after_pruning (`float`): Eval LM loss right after pruning, before any retraining.
        loss_after_retraining (`float`, *optional*): Eval LM loss after `steps` distillation steps.
        steps (`int`): Distillation steps (the same token budget for every candidate).
        seconds (`float`): Wall time for pruning, retraining and evaluation.
        error (`str`, *optional*): Why the candidate failed (`"TypeName: message"`); its losses are then None.
    """

    candidate: Candidate
    config: object
    loss_after_pruning: float | None
    loss_after_retraining: float | None = None
    steps: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def loss(self) -> float:
        """The loss the ranking uses: after retraining when there was any, else right after pruning."""
        return self.loss_after_pruning if self.loss_after_retraining is None else self.loss_after_retraining

    def to_dict(self) -> dict:
        out = {
            **self.candidate.to_dict(),
            "loss_after_pruning": self.loss_after_pruning,
            "loss_after_retraining": self.loss_after_retraining,
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
        }
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class SearchResult:
    """
    What `search_architectures` found.

    Args:
        ranking (`list[CandidateResult]`): Best first, by eval loss after retraining (or after pruning when no
            retraining was done).
        target (`dict`): The budgets and search settings.
        best_model (`nn.Module`, *optional*): The best retrained student, when `keep_best_model=True`.
        failures (`list[CandidateResult]`): Candidates that raised, with the error text (not ranked).
    """

    ranking: list[CandidateResult]
    target: dict = field(default_factory=dict)
    best_model: nn.Module | None = None
    failures: list[CandidateResult] = field(default_factory=list)

    @property
    def best(self):
        """The `PruningConfig` of the best candidate."""
        return self.ranking[0].config

    @property
    def best_after_pruning(self) -> CandidateResult:
        """The candidate with the lowest loss right after pruning (Minitron: often not the best after retraining)."""
        return min(self.ranking, key=lambda r: r.loss_after_pruning)

    @property
    def ranking_changed(self) -> bool:
        """Whether the best candidate after retraining differs from the best right after pruning."""
        return self.best_after_pruning is not self.ranking[0]

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "best": self.ranking[0].candidate.name,
            "best_after_pruning": self.best_after_pruning.candidate.name,
            "ranking_changed": self.ranking_changed,
            "ranking": [r.to_dict() for r in self.ranking],
            "failures": [r.to_dict() for r in self.failures],
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write `to_dict()` as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def to_markdown(self) -> str:
        """The ranking as a Markdown table, one column per size of the model (its config keys)."""
        keys = list(self.ranking[0].candidate.sizes) if self.ranking else []
        active = any(r.candidate.active_params not in (None, r.candidate.params) for r in self.ranking)
        header = ["rank", "family", *keys, "params", *(["active params"] if active else [])]
        header += ["loss after pruning", "loss after retraining"]
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" if h == "family" else "---:" for h in header) + "|",
        ]
        for i, r in enumerate(self.ranking, 1):
            c = r.candidate
            retrained = "-" if r.loss_after_retraining is None else f"{r.loss_after_retraining:.4f}"
            cells = [str(i), c.family, *(str(c.sizes[k]) for k in keys), f"{c.params:,}"]
            cells += [f"{c.active_params:,}"] if active else []
            cells += [f"{r.loss_after_pruning:.4f}", retrained]
            lines.append("| " + " | ".join(cells) + " |")
        for r in self.failures:
            cells = ["failed", r.candidate.family, f"{r.candidate.name}: {r.error}"]
            lines.append("| " + " | ".join(cells + [""] * (len(header) - len(cells))) + " |")
        return "\n".join(lines) + "\n"


_BATCH_KEYS = ("input_ids", "attention_mask", "labels", "position_ids")


def evaluate_lm_loss(model: nn.Module, dataset, batch_size: int = 8, data_collator=None) -> float:
    """Mean next-token LM loss over the tokens of `dataset` (`hf_minitron.evaluation.lm_loss_sum`).

    `dataset` is anything a `Trainer` takes: a `datasets.Dataset` or `IterableDataset`, a torch `Dataset`, or a
    list of dicts with `input_ids` (and optionally `attention_mask`, `labels`: padding and -100 are ignored).
    Rows are batched by `data_collator` (default: `default_data_collator` on those keys).
    """
    from torch.utils.data import DataLoader
    from transformers import default_data_collator

    from hf_minitron.evaluation import lm_loss_sum

    def collate(rows):
        if data_collator is not None:
            return data_collator(rows)
        return default_data_collator([{k: row[k] for k in _BATCH_KEYS if k in row} for row in rows])

    was_training = model.training
    model.eval()
    device = model.get_input_embeddings().weight.device
    total, count = 0.0, 0.0
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
            inputs = {k: batch[k].to(device) for k in _BATCH_KEYS if batch.get(k) is not None}
            loss_sum, n = lm_loss_sum(model, **inputs)
            total += loss_sum.item()
            count += n.item()
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError(
            "eval_dataset has no token to predict: allowed a dataset with at least one row of 2+ tokens"
        )
    return total / count


def _fresh_copy(model: nn.Module) -> nn.Module:
    """A trainable deep copy (the trainer freezes the teacher in place, so the source may be frozen)."""
    student = copy.deepcopy(model)
    for p in student.parameters():
        p.requires_grad_(True)
    return student


def _distill(student, teacher, args, train_dataset, steps: int, output_dir: str, data_collator=None):
    """Run `steps` DistillationTrainer steps on `student` (in place); the teacher's `requires_grad` flags
    (which the trainer turns off) are restored afterwards."""
    from transformers import default_data_collator

    from hf_minitron.distillation import DistillationArguments, DistillationTrainer

    if args is None:
        args = DistillationArguments(output_dir=output_dir, learning_rate=1e-4, per_device_train_batch_size=8)
    args = dataclasses.replace(
        args, output_dir=output_dir, max_steps=steps, save_strategy="no", report_to=[], eval_strategy="no"
    )
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=train_dataset,
        data_collator=data_collator or default_data_collator,
    )
    flags = [p.requires_grad for p in teacher.parameters()]
    try:
        trainer.train()
    finally:
        for p, flag in zip(teacher.parameters(), flags):
            p.requires_grad_(flag)
    return student


def _kept_by_scores(scores):
    """The layers `prune_model` keeps at each depth with these scores (what a candidate's count must assume when
    layers differ in cost), or None without layer scores."""
    from hf_minitron.pruning.depth import layers_to_keep

    layer_scores = scores.get("layers") if scores is not None else None
    if layer_scores is None:
        return None
    contiguous = scores.metadata.get("depth_metric") == "contiguous"
    return lambda depth: layers_to_keep(len(layer_scores), depth, layer_scores, contiguous)


def search_architectures(
    model: nn.Module,
    scores,
    target_params: int | None = None,
    *,
    train_dataset=None,
    eval_dataset=None,
    args=None,
    steps_per_candidate: int = 300,
    max_candidates: int = 20,
    tolerance: float = 0.05,
    target_flops_per_token: float | None = None,
    target_kv_cache_bytes_per_token: float | None = None,
    target_active_params: int | None = None,
    seq_len: int = 4096,
    families: tuple[str, ...] = FAMILIES,
    pruning_config=None,
    candidates: list[Candidate] | None = None,
    data_collator=None,
    eval_batch_size: int = 8,
    keep_best_model: bool = False,
    seed: int = 0,
    results_file: str | os.PathLike | None = None,
) -> SearchResult:
    """Minitron's light architecture search: every shape that meets the budget (at most `max_candidates`,
    chosen to cover width-only, depth-only and mixed shapes, see `enumerate_candidates`) is pruned from the
    same `scores`, retrained for `steps_per_candidate` distillation steps from the unpruned `model`, and ranked
    by eval loss after that short retraining (rankings right after pruning are unreliable; Minitron found
    they settle after ~300 steps). The loss right after pruning is recorded too.

    Args:
        model (`nn.Module`): The unpruned model; it is the teacher and stays unchanged (each candidate is
            pruned from a deep copy).
        scores (`ImportanceScores`): Scores for every axis (`estimate_importance` with a `PruningConfig` whose
            `target_params` is set scores them all).
        target_params (`int`, *optional*): Total parameter budget (exact counts, embeddings and lm_head
            included). Or/and `target_active_params` (parameters a token touches: a mixture-of-experts model's
            experts per token), `target_flops_per_token`, `target_kv_cache_bytes_per_token` at `seq_len`.
        train_dataset, eval_dataset (`datasets.Dataset`): Packed blocks (`input_ids`, `attention_mask`,
            `labels`); `train_dataset` may be None when `steps_per_candidate=0`.
        args (`DistillationArguments`, *optional*): Training settings; `max_steps` and `output_dir` are set per
            candidate (`<output_dir>/candidate-<i>`), checkpoints and reporting are off.
        steps_per_candidate (`int`, defaults to 300): Distillation steps per candidate (the same token budget
            for each); 0 ranks right after pruning.
        max_candidates (`int`, defaults to 20), tolerance (`float`, defaults to 0.05), families, seed:
            See `enumerate_candidates`.
        pruning_config (`PruningConfig`, *optional*): Settings copied into every candidate's config
            (importance criterion, depth metric, `width_multiple`, ...).
        candidates (`list[Candidate]`, *optional*): Search exactly these shapes instead of enumerating.
        keep_best_model (`bool`, defaults to False): Keep the best retrained student in `result.best_model`.
        results_file (`str`, *optional*): JSON written atomically after each candidate (finished ones and
            failures, with the error text); a rerun with the same file and settings skips the finished ones.
            Defaults to `<args.output_dir>/search_progress.json` when `args` is given, else none.

    A candidate that raises is recorded in `result.failures` and the search goes on; `RuntimeError` when every
    candidate failed.
    """
    from hf_minitron.pruning import prune_model

    if eval_dataset is None:
        raise ValueError("eval_dataset is required: candidates are ranked by their eval loss")
    if steps_per_candidate and train_dataset is None:
        raise ValueError(
            "train_dataset is required when steps_per_candidate > 0 (or pass steps_per_candidate=0)"
        )
    width_multiple = pruning_config.width_multiple if pruning_config is not None else 64
    if candidates is None:
        candidates = enumerate_candidates(
            model.config,
            target_params,
            target_active_params=target_active_params,
            kept=_kept_by_scores(scores),
            target_flops_per_token=target_flops_per_token,
            target_kv_cache_bytes_per_token=target_kv_cache_bytes_per_token,
            seq_len=seq_len,
            tolerance=tolerance,
            width_multiple=width_multiple,
            max_candidates=max_candidates,
            families=families,
            seed=seed,
        )
    base = pruning_config
    if base is not None and base.target_params is not None:
        base = dataclasses.replace(base, target_params=None)
    output_root = args.output_dir if args is not None else "search-output"
    if results_file is None and args is not None:
        results_file = os.path.join(args.output_dir, PROGRESS_NAME)
    target = {
        "target_params": target_params,
        "target_flops_per_token": target_flops_per_token,
        "target_kv_cache_bytes_per_token": target_kv_cache_bytes_per_token,
        "target_active_params": target_active_params,
        "seq_len": seq_len,
        "tolerance": tolerance,
        "steps_per_candidate": steps_per_candidate,
        "source_params": count_parameters(model.config),
        "seed": seed,
    }
    finished = _finished_candidates(results_file, target)

    def run_candidate(i: int, candidate: Candidate) -> tuple[CandidateResult, nn.Module]:
        start = time.perf_counter()
        config = candidate.to_pruning_config(base)
        student = prune_model(_fresh_copy(model), config, scores)
        loss_pruned = evaluate_lm_loss(student, eval_dataset, eval_batch_size, data_collator)
        loss_retrained = None
        if steps_per_candidate:
            torch.manual_seed(seed)
            out_dir = os.path.join(output_root, f"candidate-{i}")
            _distill(student, model, args, train_dataset, steps_per_candidate, out_dir, data_collator)
            loss_retrained = evaluate_lm_loss(student, eval_dataset, eval_batch_size, data_collator)
        elapsed = time.perf_counter() - start
        return CandidateResult(
            candidate, config, loss_pruned, loss_retrained, steps_per_candidate, elapsed
        ), student

    results: list[CandidateResult] = []
    failures: list[CandidateResult] = []
    best_model, best_loss, best_index = None, math.inf, None
    for i, candidate in enumerate(candidates):
        done = finished.get(candidate.name)
        if done is not None:  # a previous run with the same output finished it
            result = CandidateResult(
                candidate, candidate.to_pruning_config(base), done["loss_after_pruning"],
                done.get("loss_after_retraining"), done.get("steps", steps_per_candidate), done.get("seconds", 0.0),
            )  # fmt: skip
            student = None
            logger.info(
                "candidate %d/%d %s: finished in a previous run, skipped",
                i + 1,
                len(candidates),
                candidate.name,
            )
        else:
            try:
                result, student = run_candidate(i, candidate)
            except Exception as e:  # one bad shape must not lose the finished ones
                error = f"{type(e).__name__}: {e}"
                logger.warning("candidate %d/%d %s failed: %s", i + 1, len(candidates), candidate.name, error)
                failures.append(
                    CandidateResult(candidate, None, None, steps=steps_per_candidate, error=error)
                )
                _write_progress(results_file, target, results, failures)
                continue
            logger.info(
                "candidate %d/%d %s (%s, %s params): loss %.4f after pruning, %s after retraining",
                i + 1,
                len(candidates),
                candidate.name,
                candidate.family,
                f"{candidate.params:,}",
                result.loss_after_pruning,
                "-" if result.loss_after_retraining is None else f"{result.loss_after_retraining:.4f}",
            )
        results.append(result)
        _write_progress(results_file, target, results, failures)
        if keep_best_model and result.loss < best_loss:
            best_model, best_loss, best_index = student, result.loss, i
        del student
    if not results:
        raise RuntimeError(
            f"every candidate failed ({len(failures)}): "
            + "; ".join(f"{f.candidate.name}: {f.error}" for f in failures)
        )
    if keep_best_model and best_model is None:  # the best was finished by a previous run: rebuild it
        _, best_model = run_candidate(best_index, candidates[best_index])
    ranking = sorted(results, key=lambda r: (r.loss, r.candidate.params))
    return SearchResult(ranking=ranking, target=target, best_model=best_model, failures=failures)


def _finished_candidates(results_file, target: dict) -> dict[str, dict]:
    """Candidates a previous run with the same output and settings finished, by name."""
    if results_file is None or not os.path.isfile(results_file):
        return {}
    try:
        with open(results_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        logger.warning("cannot resume from %s (%s): searching every candidate again", results_file, e)
        return {}
    if data.get("target") != json.loads(json.dumps(target)):
        logger.warning("%s holds a search with other settings: searching every candidate again", results_file)
        return {}
    return {r["name"]: r for r in data.get("ranking", []) if r.get("loss_after_pruning") is not None}


def _write_progress(results_file, target: dict, results: list, failures: list) -> None:
    """The candidates finished so far (and the failures), written atomically after each candidate."""
    if results_file is None:
        return
    os.makedirs(os.path.dirname(os.path.abspath(results_file)), exist_ok=True)
    data = {
        "target": target,
        "ranking": [r.to_dict() for r in results],
        "failures": [r.to_dict() for r in failures],
    }
    atomic_write_text(results_file, json.dumps(data, indent=2) + "\n")


def _stage_shapes(
    spec, source: dict[str, int], final: dict[str, int], stages: int, width_multiple: int
) -> list[dict]:
    """Per-dimension geometric steps from `source` to `final`; widths rounded to their multiple, heads to
    whole query heads per KV group; the last stage is exactly `final`."""
    shapes = []
    for k in range(1, stages + 1):
        if k == stages:
            shapes.append(dict(final))
            continue
        frac = k / stages
        shape = {}
        for group in spec.groups:
            for key in group.config_keys:
                value = source[key] * (final[key] / source[key]) ** frac
                if group.search_step == "width":
                    step = effective_multiple(source[key], width_multiple)
                    value = step * round(value / step)
                shape[key] = int(min(source[key], max(final[key], round(value))))
            if group.search_step == "gqa":  # whole query heads per KV group
                q_key, kv_key = group.config_keys
                shape[q_key] = shape[kv_key] * max(1, round(shape[q_key] / shape[kv_key]))
        key = "num_hidden_layers"
        value = source[key] * (final[key] / source[key]) ** frac
        shape[key] = int(min(source[key], max(final[key], round(value))))
        shapes.append(shape)
    return shapes


def prune_iteratively(
    model: nn.Module,
    config,
    calibration_batches,
    *,
    train_dataset,
    args=None,
    stages: int = 2,
    steps_per_stage: int = 300,
    eval_dataset=None,
    data_collator=None,
    eval_batch_size: int = 8,
):
    """Iterative Minitron: prune part of the way, distill, re-estimate importance on the pruned model, prune
    again, for `stages` stages, with the unpruned `model` as teacher throughout (it stays unchanged).

    Each dimension shrinks geometrically towards the target of `config` (explicit sizes, or `target_params`
    resolved to Minitron's practical shape). Importance is re-estimated with `config`'s criterion on
    `calibration_batches` (a list, reused each stage).

    Returns `(student, history)`: the final distilled student and one dict per stage (shape, parameters,
    eval loss after pruning and after distillation when `eval_dataset` is given).
    """
    from hf_minitron.architectures import get_spec
    from hf_minitron.importance import estimate_importance
    from hf_minitron.pruning import prune_model
    from hf_minitron.pruning.budget import resolve_target_params

    if stages < 1:
        raise ValueError(f"stages={stages} is invalid: allowed 1 or more")
    calibration_batches = list(calibration_batches)
    config = resolve_target_params(model.config, config)
    source = shape_of(model.config)
    final = {**source, **config.target_sizes(model.config)}
    if config.num_hidden_layers is not None:
        final["num_hidden_layers"] = config.num_hidden_layers
    if config.layers_to_drop:
        if stages > 1:
            raise ValueError(
                "layers_to_drop names layers of the original model: use num_hidden_layers to iterate"
            )
        final["num_hidden_layers"] = source["num_hidden_layers"] - len(config.layers_to_drop)
    student = _fresh_copy(model)
    history = []
    output_root = args.output_dir if args is not None else "iterative-output"
    for stage, shape in enumerate(
        _stage_shapes(get_spec(model), source, final, stages, config.width_multiple), 1
    ):
        stage_config = dataclasses.replace(config, **shape, layers_to_drop=None, target_params=None)
        scores = estimate_importance(student, calibration_batches, stage_config)
        student = prune_model(student, stage_config, scores)
        record = {"stage": stage, **shape, "params": count_parameters(student.config)}
        if eval_dataset is not None:
            record["loss_after_pruning"] = evaluate_lm_loss(student, eval_dataset, eval_batch_size)
        if steps_per_stage:
            _distill(
                student,
                model,
                args,
                train_dataset,
                steps_per_stage,
                os.path.join(output_root, f"stage-{stage}"),
                data_collator,
            )
            if eval_dataset is not None:
                record["loss_after_distillation"] = evaluate_lm_loss(student, eval_dataset, eval_batch_size)
        history.append(record)
        logger.info("iterative pruning stage %d/%d: %s", stage, stages, record)
    return student, history
