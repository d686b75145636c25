"""Held-out loss right after pruning the hidden size of a real checkpoint, with and without `rescale_norms`.
Prints JSON. Needs `make real-models` first.

    python benchmarks/real_models/rescale_norms.py qwen2.5-coder-1.5b-instruct-q4_k_m 1024
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE), str(HERE.parents[1])]
from bench_real_models import blocks_from, documents, heldout_ppl, load, split_documents  # noqa: E402
from fetch import hf_path  # noqa: E402


def main(argv=None) -> dict:
    from transformers import AutoTokenizer

    from hf_minitron import PruningConfig, estimate_importance, prune_model

    name, hidden = (argv or sys.argv[1:])[:2]
    tokenizer = AutoTokenizer.from_pretrained(hf_path(name))
    held, calib, _ = split_documents(documents())
    eval_blocks = blocks_from(held, tokenizer, 256, 8, 4000)
    calib_blocks = blocks_from(calib, tokenizer, 256, 8, 4000)
    batches = [
        {"input_ids": calib_blocks[i : i + 2], "attention_mask": torch.ones_like(calib_blocks[i : i + 2])}
        for i in range(0, len(calib_blocks), 2)
    ]
    out = {"model": name, "hidden_size": int(hidden)}
    for rescale in (True, False):
        model = load(name)
        config = PruningConfig(hidden_size=int(hidden), rescale_norms=rescale)
        prune_model(model, config, estimate_importance(model, batches, config))
        out[f"rescale_norms={rescale}"] = heldout_ppl(model, eval_blocks, 4)
        del model
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
