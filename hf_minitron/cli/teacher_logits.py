"""`hf-minitron teacher-logits --teacher MODEL --data TEXT --output DIR`: store the teacher's top-k for offline KD."""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from hf_minitron.cli.arguments import DataArguments, ModelArguments, dataclass_from_namespace
from hf_minitron.cli.common import add_config_flag

SECTIONS = ["model", "data"]
STREAM_TOKENIZE_DOCS = 256  # documents per tokenizer call while streaming


def stream_blocks(texts: Iterable[str], tokenizer: Any, seq_len: int) -> Iterator[dict[str, list[int]]]:
    """The rows of `hf_minitron.data.pack_texts` (documents joined with EOS, cut into `seq_len` blocks, the tail
    dropped), tokenized only as they are consumed: the corpus is never in memory as a whole."""
    from hf_minitron.data import _encoded_batches

    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    buffer: list[int] = []
    for encoded in _encoded_batches(texts, tokenizer, STREAM_TOKENIZE_DOCS):
        buffer.extend(itertools.chain.from_iterable(doc + eos for doc in encoded))
        cut = len(buffer) // seq_len * seq_len
        for start in range(0, cut, seq_len):
            ids = buffer[start : start + seq_len]
            yield {"input_ids": ids, "attention_mask": [1] * seq_len, "labels": list(ids)}
        del buffer[:cut]


def add_parser(subparsers) -> argparse.ArgumentParser:
    from hf_minitron.distillation import TeacherLogitsArguments

    parser = subparsers.add_parser(
        "teacher-logits",
        dataclass_types=[ModelArguments, DataArguments, TeacherLogitsArguments],
        help="Run the teacher once and store its top-k next-token log-probs for offline distillation.",
        description="Pack --data into blocks of --seq_len tokens with the teacher's tokenizer (streamed: read and "
        "tokenized shard by shard), run the teacher once "
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
    from hf_minitron.data import iter_texts
    from hf_minitron.distillation import TeacherLogitsArguments, TeacherLogitsDataset, compute_teacher_logits

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
    texts = itertools.islice(
        iter_texts(data_args.data, data_args.data_split, data_args.text_column, data_args.dataset_config),
        data_args.max_texts,
    )
    blocks = stream_blocks(texts, tokenizer, seq_len)
    first = next(blocks, None)
    if first is None:
        raise ValueError(
            f"the text gives fewer than {seq_len} tokens: not one block; lower seq_len or add text"
        )
    out = compute_teacher_logits(
        teacher, itertools.chain([first], blocks), args.output, store_args, teacher_name=model_args.model_name_or_path,
        progress=not args.no_progress,
    )  # fmt: skip
    tokenizer.save_pretrained(out / "tokenizer")
    size = sum(p.stat().st_size for p in out.glob("shard-*.safetensors"))
    num_blocks = TeacherLogitsDataset(out).manifest["num_blocks"]
    tokens = num_blocks * seq_len
    print_json({"output": str(Path(out).absolute()), "blocks": num_blocks, "tokens": tokens, "top_k": store_args.top_k,
                "bytes": size, "bytes_per_token": round(size / tokens, 1),
                "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
    return 0
