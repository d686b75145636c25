"""Peak memory and step time of one distillation training step vs a plain cross-entropy step; prints JSON.

Each memory case runs in a fresh subprocess (peak RSS on the CPU, torch.cuda.max_memory_allocated on CUDA):
  plain        transformers.Trainer on the student alone (labels, the model's own cross-entropy: full logits)
  ours         hf_minitron DistillationTrainer (chunked loss from final hidden states)
  trl_gkd      TRL's GKDTrainer (off-policy: lmbda=0; full logits of both models)
  trl_distill  TRL's on-policy DistillationTrainer (chunked JSD), when it can run here: it always generates the
               completions with the student first (transformers generate without vLLM), so its prompt is 1 token
               and the student generates the remaining seq_len - 1 tokens.
On the CPU "step" is the RSS the training call adds on top of what was resident before it (weights of both models
included before), "peak" the absolute peak RSS of the process. Then a timing run in one process, interleaved:
(student training step + teacher no-grad forward) against our distillation step, median of --repeats.

    python benchmarks/bench_distill_memory.py [--vocab 131072 --seq-len 2048 --hidden 256 --layers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

CASES = ("plain", "ours", "trl_gkd", "trl_distill")


def build(args, layers: int, seed: int):
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=args.seq_len + 8,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def block(args, device="cpu"):
    ids = torch.randint(3, args.vocab, (1, args.seq_len), generator=torch.Generator().manual_seed(0)).to(
        device
    )
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def dataset(args):
    from datasets import Dataset

    return Dataset.from_dict({k: v.tolist() for k, v in block(args).items()})


def dummy_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel({"<pad>": 0, "<s>": 1, "</s>": 2, "a": 3}, unk_token="a"))
    tok.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def common(tmp, cuda):
    return dict(
        output_dir=tmp,
        max_steps=1,
        per_device_train_batch_size=1,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=not cuda,
        dataloader_num_workers=0,
    )


def make_trainer(case, args, tmp, cuda):
    from transformers import Trainer, TrainingArguments, default_data_collator

    student = build(args, args.layers, seed=1)
    teacher = build(args, args.teacher_layers, seed=2)
    if case == "plain":
        return Trainer(
            model=student, args=TrainingArguments(**common(tmp, cuda)), train_dataset=dataset(args)
        )
    if case == "ours":
        from hf_minitron import DistillationArguments, DistillationTrainer

        return DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=DistillationArguments(**common(tmp, cuda)),
            train_dataset=dataset(args),
        )
    if case == "trl_gkd":
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        config = GKDConfig(**common(tmp, cuda), lmbda=0.0, beta=0.0, max_length=args.seq_len)
        return GKDTrainer(
            model=student, teacher_model=teacher, args=config, train_dataset=dataset(args),
            data_collator=default_data_collator, processing_class=dummy_tokenizer(),
        )  # fmt: skip
    if case == "trl_distill":
        from datasets import Dataset
        from trl import DistillationConfig, DistillationTrainer

        config = DistillationConfig(
            **common(tmp, cuda), max_completion_length=args.seq_len - 1, temperature=1.0, top_k=0, top_p=1.0
        )
        student.generation_config.min_new_tokens = args.seq_len - 1  # generate the whole block (no early EOS)
        return DistillationTrainer(
            model=student, teacher_model=teacher, args=config,
            train_dataset=Dataset.from_dict({"prompt": ["a"] * 8}), processing_class=dummy_tokenizer(),
        )  # fmt: skip
    raise ValueError(case)


def rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def measure(case, args) -> dict:
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(case, args, tmp, cuda)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated() / 2**20
        else:
            with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM (peak RSS) to the current RSS
                f.write("5")
            before = rss_mib("VmRSS")
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss_mib("VmHWM")
    tokens = args.seq_len - 1 if case == "trl_distill" else args.seq_len
    return {
        "peak_mib": round(peak, 1),
        "step_mib": round(peak - before, 1),
        "seconds": round(seconds, 2),
        "tokens": tokens,
    }


def timing(args) -> dict:
    """(student CE step + teacher no-grad forward) vs our distillation step, interleaved in this process."""
    from hf_minitron import DistillationArguments, DistillationTrainer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    student, teacher = build(args, args.layers, 1).to(device), build(args, args.teacher_layers, 2).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = DistillationTrainer(
            model=student, teacher_model=teacher, args=DistillationArguments(**common(tmp, device == "cuda"))
        )
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-6)
    inputs = block(args, device)
    student.train()

    def baseline():
        student(**inputs).loss.backward()
        with torch.no_grad():
            teacher(**inputs)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def ours():
        trainer.compute_loss(student, inputs).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = {"baseline": [], "ours": []}
    for i in range(args.repeats + 1):
        for name, fn in (("baseline", baseline), ("ours", ours)):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            if i:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "baseline_s": round(med["baseline"], 3),
        "ours_s": round(med["ours"], 3),
        "ratio": round(med["ours"] / med["baseline"], 3),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, default=131072)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--teacher-layers", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this (fresh) process
    args = p.parse_args()
    if args.case:
        print(json.dumps(timing(args) if args.case == "timing" else measure(args.case, args)))
        return
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("case", "cases")]
    results = {}
    for case in [*args.cases.split(","), "timing"]:
        proc = subprocess.run(
            [sys.executable, __file__, *flags, f"--case={case}"], capture_output=True, text=True
        )
        if proc.returncode == 0:
            results[case] = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            results[case] = {
                "error": proc.stderr.strip().splitlines()[-1][:300] if proc.stderr.strip() else "failed"
            }
    plain = results.get("plain", {})
    for case in CASES:
        r = results.get(case, {})
        if "step_mib" in r and "step_mib" in plain:
            r["step_ratio_vs_plain"] = round(r["step_mib"] / plain["step_mib"], 3)
            r["peak_ratio_vs_plain"] = round(r["peak_mib"] / plain["peak_mib"], 3)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    settings = {k: v for k, v in vars(args).items() if k not in ("case",)}
    print(json.dumps({"device": device, "settings": settings, "results": results}, indent=2))


if __name__ == "__main__":
    main()
