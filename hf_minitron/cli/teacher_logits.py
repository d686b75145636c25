"""`hf-minitron teacher-logits --teacher MODEL --data TEXT --output DIR`: store the teacher's top-k for offline KD."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hf_minitron.cli.arguments import DataArguments, ModelArguments, dataclass_from_namespace
from hf_minitron.cli.common import add_config_flag

SECTIONS = ["model", "data"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    from hf_minitron.distillation import TeacherLogitsArguments

    parser = subparsers.add_parser(
        "teacher-logits",
        dataclass_types=[ModelArguments, DataArguments, TeacherLogitsArguments],
        help="Run the teacher once and store its top-k next-token log-probs for offline distillation.",
        description="Pack --data into blocks of --seq_len tokens with the teacher's tokenizer, run the teacher once "
        "and write its top-k log-probabilities per position (bf16 values, int32 indices, the log of the remaining "
        "mass) with the blocks as safetensors shards to --output. An interrupted run resumes when rerun with the "
        "same arguments. Train from it with `hf-minitron distill --teacher_logits DIR` (no teacher loaded).",
    )
    parser.add_argument("--teacher", dest="model_name_or_path", default=argparse.SUPPRESS, metavar="MODEL",
                        help="Teacher: Hub id or folder (default: model: of the recipe); loaded with --dtype.")  # fmt: skip
    parser.add_argument("--output", "-o", required=True, help="Folder of the store (created, or resumed).")
    parser.add_argument("--no_progress", action="store_true", help="Hide the progress bar.")
    add_config_flag(parser, SECTIONS)
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    from hf_minitron.cli.common import cap_seq_len, load_model_and_tokenizer, print_json
    from hf_minitron.data import load_texts, pack_texts
    from hf_minitron.distillation import TeacherLogitsArguments, compute_teacher_logits

    model_args = dataclass_from_namespace(ModelArguments, args)
    data_args = dataclass_from_namespace(DataArguments, args)
    store_args = dataclass_from_namespace(TeacherLogitsArguments, args)
    if not model_args.model_name_or_path:
        raise ValueError("the teacher is required: --teacher MODEL (or model: in the recipe)")
    if not data_args.data:
        raise ValueError("text is required: --data PATH_OR_DATASET")
    start = time.perf_counter()
    teacher, tokenizer = load_model_and_tokenizer(model_args.model_name_or_path, model_args)
    if model_args.device_map is None and torch.cuda.is_available():
        teacher.to("cuda")
    seq_len = cap_seq_len(data_args.seq_len, teacher)
    texts = load_texts(data_args.data, data_args.data_split, data_args.text_column, data_args.dataset_config,
                       data_args.max_texts)  # fmt: skip
    blocks = pack_texts(texts, tokenizer, seq_len)
    out = compute_teacher_logits(
        teacher, blocks, args.output, store_args, teacher_name=model_args.model_name_or_path,
        progress=not args.no_progress,
    )  # fmt: skip
    tokenizer.save_pretrained(out / "tokenizer")
    size = sum(p.stat().st_size for p in out.glob("shard-*.safetensors"))
    tokens = len(blocks) * seq_len
    print_json({"output": str(Path(out).absolute()), "blocks": len(blocks), "tokens": tokens, "top_k": store_args.top_k,
                "bytes": size, "bytes_per_token": round(size / tokens, 1),
                "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
    return 0
