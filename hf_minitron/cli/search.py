"""`hf-minitron search MODEL --target-params 4B --data TEXT --output DIR`: Minitron's architecture search."""

from __future__ import annotations

import argparse
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from hf_minitron.cli.arguments import DataArguments, ModelArguments, dataclass_from_namespace
from hf_minitron.cli.common import add_config_flag

logger = logging.getLogger(__name__)

SECTIONS = ["model", "data", "distillation"]
RANKING_NAME = "search_results.json"
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


@dataclass
class SearchArguments:
    """The budget and the search settings of `hf-minitron search`."""

    target_params: str | None = field(
        default=None,
        metadata={"help": "Parameter budget: 4B, 350M, 1.5e9, or a share of the model such as 50%."},
    )
    target_active_params: str | None = field(
        default=None,
        metadata={"help": "Budget in parameters a token touches (mixture-of-experts models): 3B, 50%."},
    )
    target_flops_per_token: str | None = field(
        default=None,
        metadata={"help": "Budget in forward FLOPs per token at --search_seq_len (e.g. 8G, 50%)."},
    )
    target_kv_cache_bytes_per_token: str | None = field(
        default=None,
        metadata={"help": "Budget in KV-cache bytes per token at --search_seq_len (e.g. 64K, 50%)."},
    )
    search_seq_len: int = field(
        default=4096, metadata={"help": "Context length the inference costs refer to."}
    )
    tolerance: float = field(
        default=0.05, metadata={"help": "Candidates are within this fraction of the budget."}
    )
    max_candidates: int = field(
        default=20, metadata={"help": "At most this many candidates, covering the space."}
    )
    steps_per_candidate: int = field(default=300, metadata={"help": "Distillation steps per candidate (0: rank "
                                                                    "right after pruning)."})  # fmt: skip
    importance: str = field(default="activation", metadata={"help": "activation, taylor or magnitude."})
    width_multiple: int = field(default=64, metadata={"help": "Hidden and MLP sizes are multiples of this."})
    depth_metric: str = field(
        default="block_importance", metadata={"help": "How layers are ranked for depth."}
    )
    eval_fraction: float = field(
        default=0.05,
        metadata={"help": "Share of the --data documents held out for ranking when --eval_data is unset."},
    )


def parse_budget(value: str | int | float | None, full: float, name: str) -> int | None:
    """`4B` -> 4_000_000_000, `350M`, `1.5e9`, `12345`; `50%` is a share of `full`."""
    if value is None or isinstance(value, int | float):
        return None if value is None else int(value)
    text = str(value).strip().upper().replace("_", "").replace(",", "")
    if text.endswith("%"):
        return int(round(float(text[:-1]) / 100 * full))
    match = re.fullmatch(r"([0-9.]+(?:E[0-9]+)?)([KMBGT]?)", text)
    if not match:
        raise ValueError(f"{name}={value!r} is invalid: allowed a number with an optional K/M/B/T suffix or a "
                         "percentage, e.g. 4B, 350M, 50%")  # fmt: skip
    return int(round(float(match.group(1)) * _UNITS[match.group(2)]))


def add_parser(subparsers) -> argparse.ArgumentParser:
    from hf_minitron.distillation import DistillationArguments

    parser = subparsers.add_parser(
        "search",
        dataclass_types=[ModelArguments, DataArguments, SearchArguments, DistillationArguments],
        help="Rank candidate architectures for a parameter budget.",
        description="Enumerate the shapes of MODEL that meet the budget (width, depth, mixed), prune each from "
        "one importance pass, retrain each for --steps_per_candidate distillation steps, and rank them by held-out "
        f"loss. Writes the ranking ({RANKING_NAME}), the best shape's pruning_config.json, the best retrained "
        "model with its tokenizer, and a model card with the ranking table to --output. DistillationArguments "
        "flags set the retraining (--max_steps is replaced by --steps_per_candidate).",
    )
    parser.add_argument("model_name_or_path", nargs="?", default=argparse.SUPPRESS, metavar="MODEL",
                        help="Hub id or local folder of the model (or model: in the recipe).")  # fmt: skip
    parser.add_argument("--output", "-o", required=True, help="Output folder (written atomically).")
    add_config_flag(parser, SECTIONS)
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    from hf_minitron import PruningConfig, estimate_importance
    from hf_minitron.cli.common import cap_seq_len, load_model_and_tokenizer, print_json
    from hf_minitron.counting import count_active_parameters
    from hf_minitron.data import calibration_batches, iter_texts, load_texts, pack_texts
    from hf_minitron.distillation import DistillationArguments
    from hf_minitron.hub import architecture_summary, base_model_license, recorded_command, write_model_card
    from hf_minitron.io import atomic_output_dir, atomic_write_text
    from hf_minitron.search import (
        count_parameters,
        flops_per_token,
        kv_cache_bytes_per_token,
        search_architectures,
    )

    model_args = dataclass_from_namespace(ModelArguments, args)
    data_args = dataclass_from_namespace(DataArguments, args)
    search_args = dataclass_from_namespace(SearchArguments, args)
    if not model_args.model_name_or_path:
        raise ValueError(
            "MODEL is required (positional argument, --model_name_or_path, or model: in the recipe)"
        )
    if not data_args.data:
        raise ValueError("text is required: --data PATH_OR_DATASET (calibration, retraining and ranking)")
    output = Path(args.output).expanduser().absolute()
    dist_args = dataclass_from_namespace(
        DistillationArguments,
        args,
        output_dir=getattr(args, "output_dir", None) or str(output.parent / f"{output.name}-runs"),
    )
    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(model_args.model_name_or_path, model_args)
    config = model.config
    seq = search_args.search_seq_len
    budgets = {
        "target_params": parse_budget(search_args.target_params, count_parameters(config), "target_params"),
        "target_active_params": parse_budget(
            search_args.target_active_params, count_active_parameters(config), "target_active_params"
        ),
        "target_flops_per_token": parse_budget(
            search_args.target_flops_per_token, flops_per_token(config, seq), "target_flops_per_token"
        ),
        "target_kv_cache_bytes_per_token": parse_budget(
            search_args.target_kv_cache_bytes_per_token,
            kv_cache_bytes_per_token(config, seq),
            "target_kv_cache_bytes_per_token",
        ),
    }
    if all(v is None for v in budgets.values()):
        raise ValueError("a budget is required: --target_params (e.g. 4B or 50%), --target_active_params, "
                         "--target_flops_per_token or --target_kv_cache_bytes_per_token")  # fmt: skip
    pruning_config = PruningConfig(
        target_params=budgets["target_params"] or count_parameters(config),  # scores every axis
        importance=search_args.importance,
        width_multiple=search_args.width_multiple,
        depth_metric=search_args.depth_metric,
    )

    seq_len = cap_seq_len(data_args.seq_len, model)
    texts = load_texts(data_args.data, data_args.data_split, data_args.text_column, data_args.dataset_config,
                       data_args.max_texts)  # fmt: skip
    if data_args.eval_data:
        eval_texts = load_texts(data_args.eval_data, data_args.eval_split, data_args.text_column,
                                data_args.dataset_config)  # fmt: skip
    else:  # hold out the last documents
        n_eval = max(1, int(len(texts) * search_args.eval_fraction))
        if len(texts) < 2:
            raise ValueError("--data holds a single document: give --eval_data for ranking")
        texts, eval_texts = texts[:-n_eval], texts[-n_eval:]
    train_dataset = pack_texts(texts, tokenizer, seq_len)
    eval_dataset = pack_texts(eval_texts, tokenizer, seq_len)
    calibration_texts = (  # streamed: a `datasets` name is read only until enough blocks exist
        iter_texts(
            data_args.calibration_data, data_args.data_split, data_args.text_column, data_args.dataset_config
        )
        if data_args.calibration_data
        else texts
    )
    batches = calibration_batches(
        calibration_texts, tokenizer, data_args.calibration_samples, seq_len, data_args.calibration_batch_size
    )
    scores = estimate_importance(model, batches, pruning_config)
    result = search_architectures(
        model,
        scores,
        budgets["target_params"],
        target_active_params=budgets["target_active_params"],
        target_flops_per_token=budgets["target_flops_per_token"],
        target_kv_cache_bytes_per_token=budgets["target_kv_cache_bytes_per_token"],
        seq_len=seq,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        args=dist_args,
        steps_per_candidate=search_args.steps_per_candidate,
        max_candidates=search_args.max_candidates,
        tolerance=search_args.tolerance,
        pruning_config=pruning_config,
        keep_best_model=True,
        seed=dist_args.seed,
    )
    best, student = result.ranking[0], result.best_model
    # Tokens per candidate: every optimizer step sees per-device batch x accumulation x processes blocks.
    tokens = (
        search_args.steps_per_candidate
        * dist_args.per_device_train_batch_size
        * dist_args.gradient_accumulation_steps
        * dist_args.world_size
        * seq_len
    )
    record = {
        "model_name": output.name,
        "base_model": model_args.model_name_or_path,
        "license": base_model_license(model_args.model_name_or_path),
        "architecture": {"before": architecture_summary(model), "after": architecture_summary(student)},
        "pruning": {
            "config": best.config.to_dict(),
            "importance": dict(scores.metadata or {}),
            "calibration_data": str(data_args.calibration_data or data_args.data),
            "calibration_samples": sum(len(b["input_ids"]) for b in batches),
            "seq_len": seq_len,
        },
        "distillation": (
            {
                "teacher": model_args.model_name_or_path,
                "data": data_args.data,
                "tokens": tokens,
                "seq_len": seq_len,
                "settings": {
                    "steps_per_candidate": search_args.steps_per_candidate,
                    "learning_rate": dist_args.learning_rate,
                    "per_device_train_batch_size": dist_args.per_device_train_batch_size,
                    "gradient_accumulation_steps": dist_args.gradient_accumulation_steps,
                    "world_size": dist_args.world_size,
                },
            }
            if search_args.steps_per_candidate
            else None
        ),  # fmt: skip
        "evaluations": [
            {
                "dataset": data_args.eval_data or f"{data_args.data} (held-out documents)",
                "metric": "loss",
                "value": round(best.loss, 4),
            }
        ],  # fmt: skip
        "datasets": [data_args.data] if not Path(data_args.data).exists() else [],
        "search": result.to_dict(),
        "commands": [recorded_command(getattr(args, "_command_line", None))],
    }
    with atomic_output_dir(output) as tmp:
        result.save(tmp / RANKING_NAME)
        best.config.save_pretrained(tmp)
        with torch.no_grad():
            student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        card = write_model_card(tmp, record)
        atomic_write_text(card, _with_search_section(card.read_text(encoding="utf-8"), result))
    print_json({"output": str(output), "best": best.candidate.to_dict(), "best_loss": best.loss,
                "ranking_changed": result.ranking_changed, "candidates": len(result.ranking),
                "failed": [{"name": f.candidate.name, "error": f.error} for f in result.failures],
                "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
    return 0


def _with_search_section(card: str, result) -> str:
    """The card with an "Architecture search" section (the ranking table) before "## Reproduce"."""
    target = result.target
    budget = ", ".join(f"{k}={v:,}" for k, v in target.items() if k.startswith("target_") and v is not None)
    section = (
        "## Architecture search\n\n"
        f"Candidates within {target['tolerance']:.0%} of {budget}, each pruned from the same importance scores and "
        f"retrained for {target['steps_per_candidate']} distillation steps, ranked by held-out loss after "
        "retraining (this model is rank 1"
        + ("; the best right after pruning was another shape" if result.ranking_changed else "")
        + ").\n\n"
        + result.to_markdown()
        + "\n"
    )
    marker = "## Reproduce"
    return card.replace(marker, section + marker, 1) if marker in card else card.rstrip() + "\n\n" + section
