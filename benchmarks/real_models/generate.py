"""Reload a checkpoint with plain transformers (hf_minitron is never imported) and complete code prompts.

Usage: python benchmarks/real_models/generate.py MODEL_DIR [--max-new-tokens 48] [--simple] [--prompt TEXT ...].
Greedy decoding, stopping at <|im_end|> or <|endoftext|> (Qwen's own generation config stops at both); with no
--prompt, the four short prompts below (and the eight simpler ones with --simple). `--check` runs each completed
function (prompt + completion up to the first unindented line) against small tests in a subprocess with a time
limit: model-written code is executed, so use it on models you would run anyway. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    'def is_palindrome(s: str) -> bool:\n    """Return True if s reads the same forwards and backwards."""\n',
    'def fibonacci(n: int) -> int:\n    """Return the n-th Fibonacci number, with fibonacci(0) == 0."""\n',
    'def count_words(text: str) -> dict[str, int]:\n    """Count how often each word occurs in text."""\n',
    'def read_lines(path: str) -> list[str]:\n    """Return the lines of the file at path, without newlines."""\n',
]
SIMPLE_PROMPTS = [
    'def add(a: int, b: int) -> int:\n    """Return the sum of a and b."""\n',
    'def square(x: float) -> float:\n    """Return x squared."""\n',
    'def maximum(values: list[int]) -> int:\n    """Return the largest item of values."""\n',
    'def is_even(n: int) -> bool:\n    """Return True if n is even."""\n',
    'def reverse(s: str) -> str:\n    """Return s reversed."""\n',
    'def factorial(n: int) -> int:\n    """Return n!, with factorial(0) == 1."""\n',
    'def celsius_to_fahrenheit(c: float) -> float:\n    """Convert a temperature from Celsius to Fahrenheit."""\n',
    'import os\n\n\ndef list_python_files(folder: str) -> list[str]:\n    """Return the names of the .py files in folder."""\n',
]


# expected results, keyed by function name: (arguments, expected) pairs; a file or folder argument is built by the
# harness below ("FILE" / "DIR")
TESTS = {
    "is_palindrome": [(("racecar",), True), (("ab",), False), (("",), True)],
    "fibonacci": [((0,), 0), ((1,), 1), ((10,), 55)],
    "count_words": [(("a b a",), {"a": 2, "b": 1})],
    "read_lines": [(("FILE",), ["x", "y"])],
    "add": [((2, 3), 5), ((-1, 1), 0)],
    "square": [((3,), 9), ((-2,), 4)],
    "maximum": [(([3, 7, 2],), 7)],
    "is_even": [((4,), True), ((7,), False)],
    "reverse": [(("abc",), "cba")],
    "factorial": [((0,), 1), ((5,), 120)],
    "celsius_to_fahrenheit": [((100,), 212), ((0,), 32)],
    "list_python_files": [(("DIR",), ["a.py"])],
}
HARNESS = """
import json, os, sys, tempfile
ns = {}
exec(compile(sys.stdin.read(), "<completion>", "exec"), ns)
tmp = tempfile.mkdtemp()
with open(os.path.join(tmp, "f.txt"), "w") as f:
    f.write("x\\ny\\n")
for name in ("a.py", "b.txt"):
    open(os.path.join(tmp, name), "w").close()
fixtures = {"FILE": os.path.join(tmp, "f.txt"), "DIR": tmp}
name, cases = json.loads(sys.argv[1])
failed = []
for args, expected in cases:
    got = ns[name](*[fixtures.get(a, a) if isinstance(a, str) else a for a in args])
    if name == "list_python_files":
        got = sorted(os.path.basename(p) for p in got)
    ok = abs(got - expected) < 1e-6 if isinstance(expected, (int, float)) and not isinstance(expected, bool) else got == expected
    if not ok:
        failed.append([args, repr(got)[:80], expected])
print(json.dumps(failed))
"""


def function_source(prompt: str, completion: str) -> str:
    """The prompt and the completion up to the first unindented line after it: the completed function alone."""
    lines = completion.splitlines()
    body = []
    for line in lines:
        if line.strip() and not line[0].isspace():
            break
        body.append(line)
    return prompt + "\n".join(body) + "\n"


def check(prompt: str, completion: str, timeout: float = 10.0) -> dict:
    """Run the completed function against its TESTS in a fresh interpreter: passed, or why not."""
    name = prompt.split("def ", 1)[1].split("(", 1)[0]
    with tempfile.TemporaryDirectory() as cwd:
        try:
            proc = subprocess.run(
                [sys.executable, "-c", HARNESS, json.dumps([name, TESTS[name]])],
                input=function_source(prompt, completion),
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=cwd,
            )
        except subprocess.TimeoutExpired:
            return {"passed": False, "error": f"timed out after {timeout} s"}
    if proc.returncode != 0:
        return {"passed": False, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:160]}
    failed = json.loads(proc.stdout)
    return {"passed": not failed, **({"failed": failed} if failed else {})}


def stop_ids(tokenizer) -> list[int]:
    """<|im_end|> and <|endoftext|> where the vocabulary has them (Qwen's own generation config stops at both)."""
    vocab = tokenizer.get_vocab()
    ids = {tokenizer.eos_token_id} | {vocab[t] for t in ("<|im_end|>", "<|endoftext|>") if t in vocab}
    return sorted(i for i in ids if i is not None)


def complete(model, tokenizer, prompts: list[str], max_new_tokens: int = 48) -> list[dict]:
    """Greedy completion of each prompt (the text after it, special tokens dropped)."""
    completions = []
    for prompt in prompts:
        inputs = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop_ids(tokenizer)
            )
        text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        completions.append({"prompt": prompt, "completion": text})
    return completions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--prompt", nargs="*", default=None)
    parser.add_argument("--simple", action="store_true", help="add the eight simpler prompts")
    parser.add_argument("--check", action="store_true", help="run each completed function against its tests")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(opts.model)
    model = AutoModelForCausalLM.from_pretrained(opts.model, dtype=torch.bfloat16).eval()
    prompts = (opts.prompt if opts.prompt is not None else PROMPTS) + (SIMPLE_PROMPTS if opts.simple else [])
    completions = complete(model, tokenizer, prompts, opts.max_new_tokens)
    if opts.check:
        for c in completions:
            c.update(check(c["prompt"], c["completion"]))
    result = {
        "model": opts.model,
        "class": type(model).__name__,
        "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        "hf_minitron_imported": any(m == "hf_minitron" or m.startswith("hf_minitron.") for m in sys.modules),
        **({"passed": sum(c["passed"] for c in completions)} if opts.check else {}),
        "completions": completions,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
