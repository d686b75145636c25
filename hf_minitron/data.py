"""Text loading and packing: local files or `datasets` names into token blocks for calibration and training."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["calibration_batches", "iter_texts", "load_texts", "pack_texts", "tokenize_and_pack"]

TEXT_SUFFIXES = (".txt", ".md", ".rst")
TOKENIZE_BATCH = 256  # documents per tokenizer call


def iter_texts(
    path_or_dataset: str | os.PathLike,
    split: str = "train",
    text_column: str = "text",
    dataset_config: str | None = None,
) -> Iterator[str]:
    """The non-empty documents of a local file or folder, or of a `datasets` dataset *streamed* (nothing is
    downloaded beyond what the caller consumes): stop iterating and the download stops. See `load_texts`."""
    path = Path(path_or_dataset).expanduser()
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if child.suffix in (*TEXT_SUFFIXES, ".jsonl", ".parquet"):
                yield from iter_texts(child, split, text_column)
        return
    if path.is_file():
        yield from (t for t in _load_file(path, text_column) if t and t.strip())
        return
    if path.suffix in (*TEXT_SUFFIXES, ".jsonl", ".parquet", ".json"):
        raise FileNotFoundError(f"data file not found: {path}")
    import datasets

    ds = datasets.load_dataset(str(path_or_dataset), dataset_config, split=split, streaming=True)
    for row in ds:
        if text_column not in row:
            raise ValueError(
                f"dataset {path_or_dataset!r} has no column {text_column!r} (columns: {sorted(row)})"
            )
        text = row[text_column]
        if text and text.strip():
            yield text


def load_texts(
    path_or_dataset: str | os.PathLike,
    split: str = "train",
    text_column: str = "text",
    dataset_config: str | None = None,
    max_texts: int | None = None,
) -> list[str]:
    """Load documents from a local file or a `datasets` dataset.

    Args:
        path_or_dataset (`str` or `os.PathLike`): a `.txt` file (documents separated by blank lines), a `.jsonl`
            file (one JSON object per line with `text_column`), a `.parquet` file, a folder of such files, or the
            name of a `datasets` dataset (`load_dataset(name, dataset_config, split=split)`; streamed when
            `max_texts` is set, so only those documents are downloaded).
        split (`str`, defaults to `"train"`): split of a `datasets` dataset.
        text_column (`str`, defaults to `"text"`): column or JSON key holding the text.
        dataset_config (`str`, *optional*): configuration name of a `datasets` dataset.
        max_texts (`int`, *optional*): keep at most this many documents (the first ones).

    Returns:
        `list[str]`: the non-empty documents, in file order.
    """
    path = Path(path_or_dataset).expanduser()
    local = path.exists() or path.suffix in (*TEXT_SUFFIXES, ".jsonl", ".parquet", ".json")
    if local or max_texts is not None:
        texts = list(
            itertools.islice(iter_texts(path_or_dataset, split, text_column, dataset_config), max_texts)
        )
    else:
        import datasets

        ds = datasets.load_dataset(str(path_or_dataset), dataset_config, split=split)
        if text_column not in ds.column_names:
            raise ValueError(
                f"dataset {path_or_dataset!r} has no column {text_column!r} (columns: {ds.column_names})"
            )
        texts = [t for t in ds[text_column] if t and t.strip()]
    if not texts:
        raise ValueError(f"no text found in {path_or_dataset!r}")
    return texts


def _load_file(path: Path, text_column: str) -> list[str]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=[text_column])
        return [str(t) for t in table.column(text_column).to_pylist() if t is not None]
    if path.suffix in (".jsonl", ".json"):
        texts = []
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if text_column not in record:
                    raise ValueError(f"{path}:{n}: no key {text_column!r} in the JSON record")
                texts.append(str(record[text_column]))
        return texts
    content = path.read_text(encoding="utf-8")
    return [doc.strip() for doc in content.split("\n\n") if doc.strip()]


def _encoded_batches(
    texts: Iterable[str], tokenizer: Any, batch_docs: int = TOKENIZE_BATCH
) -> Iterator[list[list[int]]]:
    """Token ids of the documents, `batch_docs` documents per tokenizer call (the corpus is never one list)."""
    texts = iter(texts)
    while batch := list(itertools.islice(texts, batch_docs)):
        yield tokenizer(batch, add_special_tokens=False, verbose=False)[
            "input_ids"
        ]  # long docs are cut later


def _pack(
    texts: Iterable[str], tokenizer: Any, seq_len: int, max_blocks: int | None = None, keep_docs: bool = False
) -> tuple[torch.Tensor, list[list[int]] | None]:
    """Blocks `[n, seq_len]` of the documents joined with EOS, tokenizing only until `max_blocks` blocks exist;
    with `keep_docs`, also the documents' ids while they make less than one block (else None)."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    need = None if max_blocks is None else max_blocks * seq_len
    pieces, n_tokens, docs = [], 0, [] if keep_docs else None
    for encoded in _encoded_batches(texts, tokenizer):
        if docs is not None:
            docs.extend(doc for doc in encoded if doc)
        piece = torch.tensor(
            list(itertools.chain.from_iterable(doc + eos for doc in encoded)), dtype=torch.long
        )
        pieces.append(piece)
        n_tokens += len(piece)
        if docs is not None and n_tokens >= seq_len:
            docs = None
        if need is not None and n_tokens >= need:
            break
    ids = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)
    n = len(ids) // seq_len if max_blocks is None else min(len(ids) // seq_len, max_blocks)
    return ids[: n * seq_len].view(n, seq_len), docs


def tokenize_and_pack(
    texts: Iterable[str], tokenizer: Any, seq_len: int, max_blocks: int | None = None
) -> torch.Tensor:
    """Token blocks `[num_blocks, seq_len]` (int64) cut from the concatenated documents (EOS after each); the
    tail is dropped. With `max_blocks`, documents are read and tokenized (in batches) only until that many exist."""
    return _pack(texts, tokenizer, seq_len, max_blocks)[0]


def pack_texts(texts: list[str], tokenizer: Any, seq_len: int, max_blocks: int | None = None):
    """Tokenize, concatenate (EOS between documents) and cut into blocks of `seq_len` tokens.

    Returns:
        `datasets.Dataset` with `input_ids`, `attention_mask` (all ones) and `labels` (= `input_ids`), one row
        per block, ready for `Trainer` with `default_data_collator`.
    """
    import datasets

    blocks = tokenize_and_pack(texts, tokenizer, seq_len, max_blocks)
    if len(blocks) == 0:
        raise ValueError(
            f"the text gives fewer than {seq_len} tokens: not one block; lower seq_len or add text"
        )
    ids = blocks.tolist()
    return datasets.Dataset.from_dict(
        {"input_ids": ids, "attention_mask": [[1] * seq_len for _ in ids], "labels": [list(r) for r in ids]}
    )


def calibration_batches(
    texts: Iterable[str], tokenizer: Any, num_samples: int, seq_len: int, batch_size: int = 8
) -> list[dict[str, torch.Tensor]]:
    """Batches of real calibration text for importance estimation: `num_samples` blocks of `seq_len` tokens.

    `texts` may be a stream (`iter_texts`): documents are read and tokenized in batches only until `num_samples`
    blocks exist. When the text is too short for one full block, the documents are used one per row, truncated and
    padded (the attention mask marks the padding). Never falls back to random tokens.

    Returns:
        `list[dict]` of `{"input_ids", "attention_mask"}` tensors, `batch_size` rows each (the last may be smaller).
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be positive, got {num_samples} and {batch_size}")
    blocks, docs = _pack(texts, tokenizer, seq_len, max_blocks=num_samples, keep_docs=True)
    if len(blocks) > 0:
        mask = torch.ones_like(blocks)
    else:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        rows = [ids[:seq_len] for ids in docs or []][:num_samples]
        if not rows:
            raise ValueError("calibration text is empty after tokenization")
        width = max(len(r) for r in rows)
        blocks = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)
    return [
        {"input_ids": blocks[i : i + batch_size], "attention_mask": mask[i : i + batch_size]}
        for i in range(0, len(blocks), batch_size)
    ]
