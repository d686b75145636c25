"""`hf-minitron eval MODEL --data TEXT`: held-out perplexity as JSON (and lm-eval tasks when installed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_minitron.cli.arguments import EvalArguments, ModelArguments, dataclass_from_namespace
from hf_minitron.cli.common import add_config_flag

SECTIONS = ["model", "eval"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        dataclass_types=[ModelArguments, EvalArguments],
        help="Held-out perplexity (and lm-evaluation-harness tasks) as JSON; updates the model card.",
        description="Perplexity and LM loss of MODEL on held-out text (the model's own loss over blocks of "
        "--seq_len tokens), printed as JSON. With --tasks (needs lm_eval: pip install 'hf-minitron[eval]') it "
        "also runs lm-evaluation-harness tasks. When MODEL is a folder written by hf-minitron, the results are "
        "added to its model card.",
    )
    parser.add_argument("model_name_or_path", nargs="?", default=argparse.SUPPRESS, metavar="MODEL",
                        help="Hub id or local folder of the model.")  # fmt: skip
    parser.add_argument("--output", "-o", default=None, help="Also write the JSON results to this file.")
    add_config_flag(parser, SECTIONS)
    return parser


def _update_card(folder: Path, data: str, split: str, results: dict) -> bool:
    from hf_minitron.hub import load_record, public_record, write_model_card

    record = load_record(folder)
    if record is None:
        return False
    new = [{"dataset": data, "split": split, "metric": "perplexity", "value": results["perplexity"]}]
    for task, metrics in results.get("tasks", {}).items():
        for metric, value in metrics.items():
            new.append({"dataset": task, "metric": metric, "value": value, "dataset_type": task})
    # Compared as written (a local path becomes its file name), so a rerun replaces its earlier result.
    record = public_record({**record, "evaluations": [*record.get("evaluations", []), *new]})
    latest = {(e["dataset"], e["metric"]): e for e in record["evaluations"]}
    record["evaluations"] = list(latest.values())
    write_model_card(folder, record)
    return True


def run(args: argparse.Namespace) -> int:
    from hf_minitron.cli.common import cap_seq_len, load_model_and_tokenizer, print_json
    from hf_minitron.data import iter_texts, load_texts
    from hf_minitron.evaluation import evaluate_perplexity, run_lm_eval
    from hf_minitron.io import atomic_write_text

    model_args = dataclass_from_namespace(ModelArguments, args)
    eval_args = dataclass_from_namespace(EvalArguments, args)
    if not model_args.model_name_or_path:
        raise ValueError("MODEL is required")
    if not eval_args.data and not eval_args.tasks:
        raise ValueError("nothing to evaluate: give --data PATH_OR_DATASET and/or --tasks")
    if eval_args.tasks:
        import importlib.util

        if importlib.util.find_spec("lm_eval") is None:
            raise ValueError("--tasks needs lm-evaluation-harness: pip install 'hf-minitron[eval]'")
    model, tokenizer = load_model_and_tokenizer(model_args.model_name_or_path, model_args)
    results: dict = {"model": model_args.model_name_or_path}
    if eval_args.data:
        if eval_args.max_blocks is None:
            texts = load_texts(
                eval_args.data, eval_args.split, eval_args.text_column, eval_args.dataset_config
            )
        else:  # streamed until enough blocks exist
            texts = iter_texts(
                eval_args.data, eval_args.split, eval_args.text_column, eval_args.dataset_config
            )
        seq_len = cap_seq_len(eval_args.seq_len, model)
        ppl = evaluate_perplexity(
            model, tokenizer, texts, seq_len, eval_args.batch_size, eval_args.max_blocks
        )
        results.update(data=eval_args.data, split=eval_args.split, seq_len=seq_len, **ppl)
    if eval_args.tasks:
        results["tasks"] = run_lm_eval(model, tokenizer, eval_args.tasks, eval_args.batch_size, eval_args.limit,
                                       eval_args.num_fewshot)  # fmt: skip
    folder = Path(model_args.model_name_or_path)
    if eval_args.update_card and folder.is_dir() and eval_args.data:
        split = None if Path(eval_args.data).exists() else eval_args.split
        results["card_updated"] = _update_card(folder, eval_args.data, split, results)
    if args.output:
        atomic_write_text(args.output, json.dumps(results, indent=2, sort_keys=True) + "\n")
    print_json(results)
    return 0
