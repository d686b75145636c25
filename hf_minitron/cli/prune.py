"""`hf-minitron prune MODEL --output DIR`: importance from calibration text, then Minitron pruning."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import time
from pathlib import Path

from hf_minitron.cli.arguments import DataArguments, ModelArguments, dataclass_from_namespace
from hf_minitron.cli.common import add_config_flag

logger = logging.getLogger(__name__)

IMPORTANCE_NAME = "importance.safetensors"
SECTIONS = ["model", "data", "pruning"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    from hf_minitron.config import PruningConfig

    parser = subparsers.add_parser(
        "prune",
        dataclass_types=[ModelArguments, DataArguments, PruningConfig],
        help="Estimate importance on calibration text and prune a model to the target shape.",
        description="Estimate the importance of neurons, heads, channels and layers on calibration text, prune "
        "MODEL to the PruningConfig targets, and save the pruned model, its tokenizer, pruning_config.json, the "
        f"importance scores ({IMPORTANCE_NAME}, reusable with --importance) and a model card to --output.",
    )
    parser.add_argument("model_name_or_path", nargs="?", default=argparse.SUPPRESS, metavar="MODEL",
                        help="Hub id or local folder of the model to prune (or model: in the recipe).")  # fmt: skip
    parser.add_argument("--output", "-o", required=True, help="Output folder (written atomically).")
    parser.add_argument("--importance_file", "--importance-file", default=None, metavar="FILE",
                        help=f"Reuse saved importance scores (a {IMPORTANCE_NAME} file or a folder holding one) "
                        "instead of a calibration pass. `--importance FILE` does the same: a value of --importance "
                        "that is not a criterion name is read as a scores file.")  # fmt: skip
    add_config_flag(parser, SECTIONS)
    return parser


def _importance_file(path: str) -> Path:
    p = Path(path)
    return p / IMPORTANCE_NAME if p.is_dir() else p


def run(args: argparse.Namespace) -> int:
    import torch

    from hf_minitron import estimate_importance, prune_model
    from hf_minitron.cli.common import cap_seq_len, load_model_and_tokenizer, print_json
    from hf_minitron.config import PruningConfig
    from hf_minitron.data import calibration_batches, iter_texts
    from hf_minitron.hub import (
        architecture_summary,
        base_model_license,
        public_text,
        recorded_command,
        write_model_card,
    )
    from hf_minitron.importance import ImportanceScores
    from hf_minitron.io import atomic_output_dir

    model_args = dataclass_from_namespace(ModelArguments, args)
    data_args = dataclass_from_namespace(DataArguments, args)
    from hf_minitron.config import IMPORTANCE_CRITERIA

    importance_file = args.importance_file
    if args.importance not in IMPORTANCE_CRITERIA:  # `--importance FILE`: reuse saved scores
        importance_file, args.importance = args.importance, "activation"
    config = dataclass_from_namespace(PruningConfig, args)
    if not model_args.model_name_or_path:
        raise ValueError(
            "MODEL is required (positional argument, --model_name_or_path, or model: in the recipe)"
        )
    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(model_args.model_name_or_path, model_args)
    config.validate_for(model.config)
    before = architecture_summary(model)
    seq_len = cap_seq_len(data_args.seq_len, model)
    calibration = data_args.calibration_data or data_args.data
    if importance_file:
        scores = ImportanceScores.load(_importance_file(importance_file))
        scores.check_compatible(model.config)
        stored = (scores.metadata or {}).get("importance")
        if stored in IMPORTANCE_CRITERIA:  # record the criterion that produced the scores, not a default
            config = dataclasses.replace(config, importance=stored)
        calibration = scores.metadata.get("calibration_data", f"(scores from {importance_file})")
    else:
        if not calibration:
            raise ValueError(
                "calibration text is required: --calibration_data PATH_OR_DATASET (or --data, or --importance FILE)"
            )
        # Streamed: a `datasets` name is read only until enough blocks exist.
        texts = itertools.islice(
            iter_texts(calibration, data_args.data_split, data_args.text_column, data_args.dataset_config),
            data_args.max_texts,
        )
        batches = calibration_batches(
            texts, tokenizer, data_args.calibration_samples, seq_len, data_args.calibration_batch_size
        )
        n_samples = sum(len(b["input_ids"]) for b in batches)
        if n_samples < data_args.calibration_samples:
            logger.warning("calibration text gives %d blocks of %d tokens (asked for %d)", n_samples, seq_len,
                           data_args.calibration_samples)  # fmt: skip
        scores = estimate_importance(model, batches, config)
        # Saved with the scores (and uploaded by push): the data's name, never a machine path.
        scores.metadata = {**(scores.metadata or {}), "calibration_data": public_text(str(calibration)),
                           "calibration_samples": n_samples, "seq_len": seq_len}  # fmt: skip
    with torch.no_grad():
        model = prune_model(model, config, scores)
    after = architecture_summary(model)
    record = {
        "model_name": Path(args.output).name,
        "base_model": model_args.model_name_or_path,
        "license": base_model_license(model_args.model_name_or_path),
        "architecture": {"before": before, "after": after},
        "pruning": {
            "config": config.to_dict(),
            "importance": {k: v for k, v in (scores.metadata or {}).items() if k not in ("shapes",)},
            "calibration_data": str(calibration),
            "calibration_samples": scores.metadata.get("calibration_samples", data_args.calibration_samples),
            "seq_len": scores.metadata.get("seq_len", seq_len),
        },
        "datasets": [str(calibration)] if calibration and not Path(str(calibration)).exists() else [],
        "evaluations": [],
        "commands": [recorded_command(args._command_line)],
    }
    with atomic_output_dir(args.output) as tmp:
        scores.save(tmp / IMPORTANCE_NAME)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config.save_pretrained(tmp)
        write_model_card(tmp, record)
    print_json({"output": str(Path(args.output).resolve()), "before": before, "after": after,
                "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
    return 0
