"""A tiny Llama with a tokenizer trained in the test, and text files, for the CLI / hub / quickstart tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

SENTINEL_TOKEN = "hf_SENTINELtokenNEVERwritten0123456789"


def pydoc_lines(n: int = 400) -> list[str]:
    """A few hundred non-empty lines of Python's documentation (always on the machine)."""
    from pydoc_data.topics import topics

    lines = []
    for name in sorted(topics):
        lines.extend(line.strip() for line in topics[name].splitlines() if len(line.strip()) > 20)
        if len(lines) >= n:
            break
    return lines[:n]


def make_workspace(root: Path) -> dict[str, Path]:
    """train.txt / held.txt (documents separated by blank lines) and a tiny Llama + tokenizer in `root/tiny`."""
    from hf_minitron.quickstart import train_tokenizer

    lines = pydoc_lines()
    docs = ["\n".join(lines[i : i + 5]) for i in range(0, len(lines), 5)]
    train, held = docs[:-10], docs[-10:]
    (root / "train.txt").write_text("\n\n".join(train) + "\n")
    (root / "held.txt").write_text("\n\n".join(held) + "\n")
    tokenizer = train_tokenizer(train, vocab_size=300)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, head_dim=8, max_position_embeddings=128,
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(root / "tiny")
    tokenizer.save_pretrained(root / "tiny")
    return {"root": root, "model": root / "tiny", "train": root / "train.txt", "held": root / "held.txt"}


def prune_args(ws: dict[str, Path], output: Path, *extra: str) -> list[str]:
    return [
        "prune", str(ws["model"]), "--output", str(output), "--calibration-data", str(ws["train"]),
        "--calibration-samples", "8", "--calibration-batch-size", "4", "--seq-len", "32",
        "--hidden-size", "48", "--intermediate-size", "64", *extra,
    ]  # fmt: skip


def distill_args(ws: dict[str, Path], student: Path, output: Path, *extra: str) -> list[str]:
    return [
        "distill", "--student", str(student), "--teacher", str(ws["model"]), "--data", str(ws["train"]),
        "--eval_data", str(ws["held"]), "--seq-len", "32", "--output", str(output), "--max_steps", "3",
        "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--report_to", "none",
        "--save_strategy", "no", "--use_cpu", "--dataloader_pin_memory", "false", *extra,
    ]  # fmt: skip


def all_files_text(root: Path, skip_suffixes: tuple[str, ...] = ()) -> str:
    """Every file under `root` (but those ending in `skip_suffixes`) decoded leniently, to search for leaked secrets."""
    chunks = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if name.endswith(skip_suffixes):
                continue
            chunks.append(Path(dirpath, name).read_bytes().decode("utf-8", "replace"))
    return "\n".join(chunks)
