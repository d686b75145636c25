"""Peak memory of one LM-loss evaluation: the model's full-vocabulary logits + `F.cross_entropy` (what the library
did before) against `hf_minitron.evaluation.lm_loss_sum` (chunked from the final hidden states).

Each method runs in a fresh child process; its peak RSS is reset (Linux `/proc/self/clear_refs`) after the model is
built, so the figure is the loss computation alone. Llama-shaped, random init, fp32, vocab 128256 (Llama 3). Prints JSON.

    python benchmarks/bench_lm_loss.py [--batch 2 --seq-len 2048 --vocab 128256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import MiB, status_kib  # noqa: E402


def child(mode: str, batch: int, seq_len: int, vocab: int) -> dict:
    import time

    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, LlamaConfig

    from hf_minitron.evaluation import lm_loss_sum

    torch.set_num_threads(1)
    config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max(seq_len, 128),
                         tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    ids = torch.randint(0, vocab, (batch, seq_len))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS
    before = status_kib("VmRSS")
    start = time.perf_counter()
    with torch.no_grad():
        if mode == "full_logits":
            logits = model(input_ids=ids).logits[:, :-1].float()
            loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).item()
        else:
            total, count = lm_loss_sum(model, ids)
            loss = (total / count).item()
    return {
        "loss": round(loss, 5),
        "peak_mib_above_model": round((status_kib("VmHWM") - before) * 1024 / MiB),
        "seconds": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        print(json.dumps(child(opts.child, opts.batch, opts.seq_len, opts.vocab)))
        return
    results = {"batch": opts.batch, "seq_len": opts.seq_len, "vocab": opts.vocab,
               "full_logits_fp32_mib": round(opts.batch * (opts.seq_len - 1) * opts.vocab * 4 / MiB)}  # fmt: skip
    for mode in ("full_logits", "chunked"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--batch", str(opts.batch), "--seq-len",
                              str(opts.seq_len), "--vocab", str(opts.vocab)], capture_output=True, text=True, check=True)  # fmt: skip
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
