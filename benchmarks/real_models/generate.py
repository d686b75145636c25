"""Reload a checkpoint with plain transformers (hf_minitron is never imported) and complete code prompts.

Usage: python benchmarks/real_models/generate.py MODEL_DIR [--max-new-tokens 48] [--prompt TEXT ...]. Greedy
decoding; with no --prompt, the four short prompts below. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    'def is_palindrome(s: str) -> bool:\n    """Return True if s reads the same forwards and backwards."""\n',
    'def fibonacci(n: int) -> int:\n    """Return the n-th Fibonacci number, with fibonacci(0) == 0."""\n',
    'def count_words(text: str) -> dict[str, int]:\n    """Count how often each word occurs in text."""\n',
    'def read_lines(path: str) -> list[str]:\n    """Return the lines of the file at path, without newlines."""\n',
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--prompt", nargs="*", default=PROMPTS)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    opts = parser.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(opts.model)
    model = AutoModelForCausalLM.from_pretrained(opts.model, dtype=torch.bfloat16).eval()
    completions = []
    for prompt in opts.prompt:
        inputs = tokenizer(prompt, return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=opts.max_new_tokens, do_sample=False)
        text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        completions.append({"prompt": prompt, "completion": text})
    result = {
        "model": opts.model,
        "class": type(model).__name__,
        "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        "hf_minitron_imported": any(m == "hf_minitron" or m.startswith("hf_minitron.") for m in sys.modules),
        "completions": completions,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
