"""Reload a checkpoint with plain transformers (hf_minitron is never imported) and complete a code prompt.

Usage: python benchmarks/real_models/generate.py MODEL_DIR [--max-new-tokens 48] [--prompt TEXT]. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPT = (
    'def is_palindrome(s: str) -> bool:\n    """Return True if s reads the same forwards and backwards."""\n'
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    opts = parser.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(opts.model)
    model = AutoModelForCausalLM.from_pretrained(opts.model, dtype=torch.bfloat16).eval()
    inputs = tokenizer(opts.prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=opts.max_new_tokens, do_sample=False)
    completion = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    result = {
        "model": opts.model,
        "class": type(model).__name__,
        "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        "hf_minitron_imported": any(m == "hf_minitron" or m.startswith("hf_minitron.") for m in sys.modules),
        "prompt": opts.prompt,
        "completion": completion,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
