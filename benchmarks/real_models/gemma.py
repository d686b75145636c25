"""Gemma 3 270M (real pretrained, Q4_K_M dequantized) pruned to half its parameters: width vs mixed depth+width,
held-out perplexity right after pruning and after a short distillation, reload and generate. Prints JSON.

    python benchmarks/real_models/gemma.py [--steps 20] [--workdir $HF_MINITRON_REAL_CACHE/gemma]

Needs `make real-models` first (the converted checkpoint outside the repository).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))
from bench_real_models import blocks_from, documents, heldout_ppl, load, log, n_params, split_documents  # noqa: E402
from fetch import cache_dir, hf_path  # noqa: E402

MODEL = "gemma-3-270m-q4_k_m"


def distill(student, teacher, train_blocks, steps: int, batch: int, lr: float, workdir: Path) -> float:
    """`steps` of forward-KL distillation from `teacher`; returns the training seconds."""
    import datasets
    from transformers import default_data_collator

    from hf_minitron import DistillationArguments, DistillationTrainer

    n = steps * batch
    ds = datasets.Dataset.from_dict(
        {"input_ids": train_blocks[:n].tolist(), "attention_mask": [[1] * train_blocks.shape[1]] * n}
    )
    args = DistillationArguments(
        output_dir=str(workdir / "trainer"), max_steps=steps, per_device_train_batch_size=batch,
        learning_rate=lr, lr_scheduler_type="constant", weight_decay=0.0, logging_steps=5, save_strategy="no",
        report_to=[], use_cpu=True, seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=ds, data_collator=default_data_collator
    )
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Trainer's log lines: stdout carries only the JSON
        trainer.train()
    return time.perf_counter() - start


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=str(cache_dir() / "gemma"))
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--eval-blocks", type=int, default=16)
    p.add_argument("--calibration-blocks", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--fraction", type=float, default=0.5)
    opts = p.parse_args(argv)
    from transformers import AutoTokenizer

    from hf_minitron import PruningConfig, estimate_importance, prune_model
    from hf_minitron.counting import count_parameters

    workdir = Path(opts.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(hf_path(MODEL))
    held, calib, train = split_documents(documents())
    eval_blocks = blocks_from(held, tokenizer, opts.seq_len, opts.eval_blocks, 4000)
    calib_blocks = blocks_from(calib, tokenizer, opts.seq_len, opts.calibration_blocks, 4000)
    train_blocks = blocks_from(train, tokenizer, opts.seq_len, opts.steps * opts.batch, 4000)
    batches = [
        {"input_ids": calib_blocks[i : i + 2], "attention_mask": torch.ones_like(calib_blocks[i : i + 2])}
        for i in range(0, len(calib_blocks), 2)
    ]
    teacher = load(MODEL)
    total = n_params(teacher)
    result = {
        "model": MODEL,
        "params": total,
        "teacher": heldout_ppl(teacher, eval_blocks, 4),
        "note": "Q4_K_M-dequantized weights; 2-core CPU",
    }
    log("teacher", result["teacher"])
    target = int(opts.fraction * total)
    shapes = {
        "width": PruningConfig(target_params=target),
        "mixed (depth 18 -> 12 + width)": PruningConfig(target_params=target, num_hidden_layers=12),
    }
    embedding = teacher.get_input_embeddings().weight.numel()
    result["embedding_params"] = embedding
    result["depth_only_smallest"] = count_parameters(teacher.config, {"num_hidden_layers": 1})
    for name, config in shapes.items():
        student = load(MODEL, dtype=torch.float32)
        start = time.perf_counter()
        scores = estimate_importance(student, batches, config)
        importance_s = time.perf_counter() - start
        prune_model(student, config, scores)
        c = student.config
        row = {
            "shape": {k: getattr(c, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers")},
            "params": n_params(student),
            "importance_s": round(importance_s, 1),
            "after_pruning": heldout_ppl(student, eval_blocks, 4),
        }
        log(name, row)
        row["train_s"] = round(
            distill(student, teacher, train_blocks, opts.steps, opts.batch, opts.lr, workdir), 1
        )
        row["tokens"] = opts.steps * opts.batch * opts.seq_len
        row["after_distillation"] = heldout_ppl(student, eval_blocks, 4)
        out = workdir / name.split(" ")[0]
        student.to(torch.bfloat16).save_pretrained(out)
        tokenizer.save_pretrained(out)
        check = subprocess.run(
            [sys.executable, str(HERE / "generate.py"), str(out)], capture_output=True, text=True, timeout=600
        )
        row["reload"] = (
            json.loads(check.stdout[check.stdout.index("{") :])
            if check.returncode == 0
            else check.stderr[-500:]
        )
        log(name, row)
        result[name] = row
        del student
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
