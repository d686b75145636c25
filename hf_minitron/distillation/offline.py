"""Offline teacher: run the teacher once, store its top-k next-token log-probabilities, distill from the store.

A store is a folder of safetensors shards plus `teacher_logits.json`. Each shard holds, for its blocks of `T` tokens:
`input_ids`, `attention_mask`, `labels` (`[n, T]`, int32 / uint8 / int32) and, for the `T - 1` positions that predict
a next token, `topk_logprobs` (`[n, T - 1, k]`, bfloat16), `topk_indices` (`[n, T - 1, k]`, int32) and `rest_logprob`
(`[n, T - 1]`, float32: the log of the teacher's probability mass outside its top k). Shards are written atomically
and recorded in the manifest as each one ends, so an interrupted run resumes at the first missing shard.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers.utils import logging

from hf_minitron.io import atomic_file, atomic_write_text

from . import modeling as M
from .chunked import DEFAULT_CHUNK_ELEMENTS
from .losses import teacher_topk

logger = logging.get_logger(__name__)

__all__ = ["MANIFEST_NAME", "TeacherLogitsArguments", "TeacherLogitsDataset", "compute_teacher_logits"]

MANIFEST_NAME = "teacher_logits.json"
FORMAT = "hf-minitron-teacher-logits/1"
TEACHER_KEYS = ("teacher_topk_logprobs", "teacher_topk_indices", "teacher_rest_logprob")
_VALUE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class TeacherLogitsArguments:
    """
    Settings of `compute_teacher_logits` / `hf-minitron teacher-logits`.

    Args:
        top_k (`int`, defaults to 32): teacher tokens kept per position (the rest is one bucket).
        batch_size (`int`, defaults to 8): blocks per teacher forward.
        blocks_per_shard (`int`, defaults to 256): blocks per safetensors shard (the unit of resumption).
        values_dtype (`str`, defaults to `"bfloat16"`): dtype of the stored log-probabilities (`bfloat16`, `float16`
            or `float32`).
    """

    top_k: int = field(default=32, metadata={"help": "Teacher tokens kept per position (1 .. vocab size)."})
    batch_size: int = field(default=8, metadata={"help": "Blocks per teacher forward pass."})
    blocks_per_shard: int = field(default=256, metadata={"help": "Blocks per safetensors shard."})
    values_dtype: str = field(
        default="bfloat16",
        metadata={"help": "Stored log-probability dtype.", "choices": sorted(_VALUE_DTYPES)},
    )

    def __post_init__(self):
        for name in ("top_k", "batch_size", "blocks_per_shard"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.values_dtype not in _VALUE_DTYPES:
            raise ValueError(
                f"values_dtype={self.values_dtype!r} is invalid: allowed {sorted(_VALUE_DTYPES)}."
            )


def _blocks(dataset: Any) -> dict[str, torch.Tensor]:
    """`input_ids`, `attention_mask`, `labels` as `[N, T]` tensors from a datasets.Dataset, a dict or a list of rows."""
    if hasattr(dataset, "column_names") or isinstance(dataset, dict):
        columns = dataset[:] if hasattr(dataset, "column_names") else dataset
    else:
        rows = [dataset[i] for i in range(len(dataset))]
        columns = {k: [r[k] for r in rows] for k in rows[0]} if rows else {}
    if "input_ids" not in columns:
        raise ValueError("the dataset for teacher logits needs an `input_ids` column of token blocks.")
    ids = torch.as_tensor(columns["input_ids"], dtype=torch.long)
    if ids.ndim != 2 or ids.shape[1] < 2:
        raise ValueError(f"input_ids must be blocks [N, T] with T >= 2, got shape {tuple(ids.shape)}.")
    mask = torch.as_tensor(columns["attention_mask"]) if "attention_mask" in columns else torch.ones_like(ids)
    labels = torch.as_tensor(columns["labels"]) if "labels" in columns else ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask.long(), "labels": labels.long()}


def _fingerprint(blocks: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in ("input_ids", "attention_mask", "labels"):
        digest.update(blocks[name].numpy().tobytes())
    return digest.hexdigest()[:16]


def _shard_blocks(dataset: Any, size: int) -> Iterator[dict[str, torch.Tensor]]:
    """The dataset's blocks `size` rows at a time (one shard each), never the whole dataset at once.

    A `datasets.Dataset` (memory-mapped) and a dict of columns are sliced; anything else (a list of rows, a generator,
    a `datasets.IterableDataset`) is iterated.
    """
    if isinstance(dataset, dict) or (hasattr(dataset, "column_names") and hasattr(dataset, "__len__")):
        n = len(dataset["input_ids"]) if isinstance(dataset, dict) else len(dataset)
        for start in range(0, n, size):
            if isinstance(dataset, dict):
                yield _blocks({k: v[start : start + size] for k, v in dataset.items()})
            else:
                yield _blocks(dataset[start : start + size])
        return
    rows = iter(dataset)
    while chunk := list(itertools.islice(rows, size)):
        yield _blocks(chunk)


@torch.no_grad()
def _teacher_rows(teacher, ids, mask, k: int, values_dtype: torch.dtype):
    """Top-k log-probs, indices and rest log-mass `[n, T - 1, ...]` for a batch of blocks, chunk by chunk."""
    device = M.base_model(teacher).get_input_embeddings().weight.device
    hidden = M.decoder(teacher)(
        input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False
    ).last_hidden_state[:, :-1]
    n, t, h = hidden.shape
    flat = hidden.reshape(n * t, h)
    head = M.logit_head(teacher)
    chunk = max(1, DEFAULT_CHUNK_ELEMENTS // head.weight.shape[0])
    values, indices, rest = [], [], []
    for start in range(0, flat.shape[0], chunk):
        v, i, r = teacher_topk(head.logits(flat[start : start + chunk]), k)
        values.append(v.to(values_dtype).cpu())
        indices.append(i.int().cpu())
        rest.append(r.cpu())
    return (
        torch.cat(values).view(n, t, k),
        torch.cat(indices).view(n, t, k),
        torch.cat(rest).view(n, t),
    )


def compute_teacher_logits(
    teacher: Any,
    dataset: Any,
    output_dir: str | os.PathLike,
    args: TeacherLogitsArguments | None = None,
    *,
    teacher_name: str | None = None,
    progress: bool = True,
) -> Path:
    """
    Run `teacher` once over tokenized blocks and store its top-k next-token log-probabilities for offline distillation.

    Resumable: a rerun with the same teacher name, data and settings skips the shards already written (their blocks are
    read again and compared with the fingerprints recorded per shard); a rerun with other settings or data is refused
    (use another `output_dir`).

    Args:
        teacher (`PreTrainedModel`): the teacher, on the device to run it on (eval mode is set).
        dataset (`datasets.Dataset`, dict of columns, or any iterable of rows such as a generator): blocks with
            `input_ids` (`[N, T]`), and optionally `attention_mask` and `labels` (e.g. `hf_minitron.data.pack_texts`).
            It is read one shard (`blocks_per_shard` rows) at a time: a generator streams.
        output_dir (`str` or `os.PathLike`): the store folder.
        args (`TeacherLogitsArguments`, *optional*): top-k, batch size, shard size, value dtype.
        teacher_name (`str`, *optional*): recorded in the manifest (default: `config._name_or_path`).
        progress (`bool`, defaults to True): show a tqdm progress bar.

    Returns:
        `Path` of the store, readable with `TeacherLogitsDataset`.
    """
    from tqdm.auto import tqdm

    args = args or TeacherLogitsArguments()
    vocab = M.output_vocab(teacher)
    if not 1 <= args.top_k <= vocab:
        raise ValueError(f"top_k={args.top_k} is invalid: allowed 1 .. {vocab} (the teacher's vocabulary).")
    shards = _shard_blocks(dataset, args.blocks_per_shard)
    first = next(shards, None)  # the block length comes from the data
    shards = itertools.chain([first] if first is not None else [], shards)
    settings = {
        "format": FORMAT,
        "teacher": teacher_name or M.base_model(teacher).config._name_or_path,
        "vocab_size": vocab,
        "top_k": args.top_k,
        "values_dtype": args.values_dtype,
        "seq_len": int(first["input_ids"].shape[1]) if first is not None else None,
        "blocks_per_shard": args.blocks_per_shard,
    }
    out = Path(output_dir)
    manifest_path = out / MANIFEST_NAME
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        changed = {k: (manifest.get(k), v) for k, v in settings.items() if manifest.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: stored {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise ValueError(
                f"{out} holds teacher logits made with other settings ({detail}); use another output."
            )
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"{out} exists and is not a teacher-logits store; choose an empty or new folder."
        )
    else:
        manifest = {**settings, "shards": [], "complete": False}
    out.mkdir(parents=True, exist_ok=True)

    def save_manifest():
        atomic_write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True))

    teacher.eval()
    total = len(dataset) if hasattr(dataset, "__len__") else None
    bar = tqdm(total=total, desc="teacher logits", unit="block", disable=not progress)
    index = -1
    for index, blocks in enumerate(shards):
        rows, fingerprint = len(blocks["input_ids"]), _fingerprint(blocks)
        if index < len(manifest["shards"]):  # written by an earlier run: the same blocks, or a refusal
            if manifest["shards"][index].get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{out} holds teacher logits of other data (data_fingerprint of shard {index} differs); use "
                    "another output."
                )
            bar.update(rows)
            continue
        ids, mask = blocks["input_ids"], blocks["attention_mask"]
        parts = []
        for b in range(0, rows, args.batch_size):
            parts.append(
                _teacher_rows(
                    teacher,
                    ids[b : b + args.batch_size],
                    mask[b : b + args.batch_size],
                    args.top_k,
                    _VALUE_DTYPES[args.values_dtype],
                )  # fmt: skip
            )
            bar.update(min(args.batch_size, rows - b))
        tensors = {
            "input_ids": ids.int(),
            "attention_mask": mask.to(torch.uint8),
            "labels": blocks["labels"].int(),
            "topk_logprobs": torch.cat([p[0] for p in parts]),
            "topk_indices": torch.cat([p[1] for p in parts]),
            "rest_logprob": torch.cat([p[2] for p in parts]),
        }
        name = f"shard-{index:05d}.safetensors"
        with atomic_file(out / name) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={"format": FORMAT})
        manifest["shards"].append({"file": name, "rows": rows, "fingerprint": fingerprint})
        manifest["complete"] = False
        save_manifest()
    bar.close()
    if index + 1 < len(manifest["shards"]):
        raise ValueError(
            f"{out} holds teacher logits of other data (data_fingerprint: the store has {len(manifest['shards'])} "
            f"shards, the data {index + 1}); use another output."
        )
    digest = hashlib.sha256("".join(s["fingerprint"] for s in manifest["shards"]).encode())
    manifest.update(num_blocks=sum(s["rows"] for s in manifest["shards"]), complete=True,
                    data_fingerprint=digest.hexdigest()[:16])  # fmt: skip
    save_manifest()
    return out


class TeacherLogitsDataset(torch.utils.data.Dataset):
    """
    The blocks of a teacher-logits store with the teacher's stored distribution, for `DistillationTrainer` without a
    teacher (use `transformers.default_data_collator`).

    Args:
        path (`str` or `os.PathLike`): a folder written by `compute_teacher_logits` / `hf-minitron teacher-logits`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST_NAME
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{self.path} is not a teacher-logits store: {MANIFEST_NAME} is missing.")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{manifest_path}: format {self.manifest.get('format')!r} is not {FORMAT!r}.")
        if not self.manifest.get("complete"):
            raise ValueError(f"{self.path} is incomplete; rerun `hf-minitron teacher-logits` to finish it.")
        self.vocab_size = int(self.manifest["vocab_size"])
        self.top_k = int(self.manifest["top_k"])
        self._rows = [(s["file"], r) for s in self.manifest["shards"] for r in range(s["rows"])]
        self._handles: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __getstate__(self):  # file handles stay in their process (DataLoader workers reopen them)
        return {**self.__dict__, "_handles": {}}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        file, row = self._rows[i]
        if file not in self._handles:
            self._handles[file] = safe_open(str(self.path / file), framework="pt")
        f = self._handles[file]

        def get(name):
            return f.get_slice(name)[row : row + 1][0]

        return {
            "input_ids": get("input_ids").long(),
            "attention_mask": get("attention_mask").long(),
            "labels": get("labels").long(),
            "teacher_topk_logprobs": get("topk_logprobs"),
            "teacher_topk_indices": get("topk_indices"),
            "teacher_rest_logprob": get("rest_logprob"),
        }
