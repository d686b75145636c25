"""The quickstart pipeline: teacher -> importance -> prune -> distill, against the same student from scratch."""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from hf_minitron.quickstart.settings import QuickstartArguments

__all__ = ["HeldoutLossCurve", "format_summary", "run_quickstart"]

logger = logging.getLogger(__name__)

HELDOUT_NAME = "python-docs-heldout"  # label of the held-out part of the built-in corpus


def _callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class HeldoutLossCurve(_callback_base()):
    """Trainer callback: held-out LM loss every `every` steps (and before the first), against tokens seen."""

    def __init__(self, blocks: torch.Tensor, every: int, tokens_per_step: int):
        self.blocks, self.every, self.tokens_per_step = blocks, max(1, every), tokens_per_step
        self.points: list[tuple[int, float]] = []

    def _measure(self, model, step: int) -> None:
        from hf_minitron.evaluation import perplexity_on_blocks

        loss = perplexity_on_blocks(model, self.blocks, batch_size=16, progress=False)["loss"]
        self.points.append((step * self.tokens_per_step, round(loss, 4)))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._measure(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._measure(model, state.global_step)


def _training_args(cls, output_dir: str, s: QuickstartArguments, steps: int, **overrides: Any):
    base = dict(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=s.batch_size,
        learning_rate=1e-3,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        weight_decay=0.0,
        seed=s.seed,
        data_seed=s.seed,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        dataloader_pin_memory=False,
        disable_tqdm=False,
    )
    base.update(overrides)
    return cls(**base)


def _entry(model, evaluation: dict[str, float]) -> dict[str, Any]:
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "heldout_loss": round(evaluation["loss"], 4),
        "heldout_perplexity": round(evaluation["perplexity"], 2),
    }


ROWS = [
    ("teacher", "teacher (trained, cached)"),
    ("pruned", "pruned, before distillation"),
    ("distilled", "pruned + distilled"),
    ("scratch", "same shape, from scratch"),
]


def format_summary(results: dict[str, Any]) -> str:
    """The summary table printed at the end of the quickstart."""
    lines = [f"{'model':<30}{'params':>10}{'held-out loss':>15}{'perplexity':>12}"]
    for key, label in ROWS:
        r = results[key]
        lines.append(
            f"{label:<30}{r['parameters'] / 1e6:>9.2f}M{r['heldout_loss']:>15.3f}{r['heldout_perplexity']:>12.1f}"
        )
    t = results["tokens"]
    lines.append(
        f"distillation and scratch each saw {t['distillation']:,} tokens; the teacher saw {t['teacher_training']:,}."
    )
    ratio = results["scratch"]["heldout_perplexity"] / results["distilled"]["heldout_perplexity"]
    lines.append(f"pruned + distilled perplexity is {ratio:.1f}x lower than from scratch on the same tokens.")
    lines.append(f"wall time: {results['wall_time_seconds']['total']:.0f} s"
                 + (" (teacher loaded from cache)" if results["teacher_cached"] else ""))  # fmt: skip
    return "\n".join(lines)


def _plot(path: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for key, label, color in (
        ("distill", "pruned + distilled", "tab:blue"),
        ("scratch", "from scratch", "tab:red"),
    ):
        pts = results["curves"][key]
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker="o",
            ms=3,
            label=f"{label} ({results[key if key == 'scratch' else 'distilled']['parameters'] / 1e6:.1f}M params)",
            color=color,
        )  # noqa: E501
    ax.axhline(results["curves"]["teacher"], ls="--", color="gray",
               label=f"teacher ({results['teacher']['parameters'] / 1e6:.1f}M params)")  # fmt: skip
    ax.set_xlabel("training tokens")
    ax.set_ylabel(f"held-out LM loss ({results['curves']['heldout_tokens']:,} tokens)")
    ax.set_title("Minitron quickstart: same student shape, same tokens")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_quickstart(
    output_dir: str | os.PathLike = "quickstart-output",
    settings: QuickstartArguments | None = None,
    pruning: Any = None,
    distillation: dict[str, Any] | None = None,
    recipe: str = "quickstart",
    command: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Run the whole Minitron pipeline offline on the built-in corpus and write the results to `output_dir`.

    Args:
        output_dir (`str`): where the pruned+distilled model, tokenizer, model card, `results.json` and
            `loss_curve.png` go (written atomically).
        settings (`QuickstartArguments`, *optional*): defaults to the `quickstart:` section of `recipe`;
            keyword `overrides` replace its fields (e.g. `teacher_steps=20`).
        pruning (`PruningConfig`, *optional*): defaults to the `pruning:` section of `recipe`.
        distillation (`dict`, *optional*): `DistillationArguments` fields; defaults to the recipe's section.
        recipe (`str`, defaults to `"quickstart"`): recipe name or path for what is not given.

    Returns:
        `dict`: the content of `results.json`.
    """
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, default_data_collator

    from hf_minitron import (
        DistillationArguments,
        DistillationTrainer,
        PruningConfig,
        estimate_importance,
        prune_model,
    )
    from hf_minitron.cli.arguments import load_recipe
    from hf_minitron.data import calibration_batches, pack_texts, tokenize_and_pack
    from hf_minitron.evaluation import perplexity_on_blocks
    from hf_minitron.hub import architecture_summary, write_model_card
    from hf_minitron.io import atomic_output_dir
    from hf_minitron.quickstart.corpus import builtin_corpus
    from hf_minitron.quickstart.teacher import TeacherSettings, load_or_train_teacher

    start = time.perf_counter()
    timings: dict[str, float] = {}
    sections = load_recipe(recipe) if (settings is None or pruning is None or distillation is None) else {}
    if settings is None:
        settings = QuickstartArguments(**sections.get("quickstart", {}))
    if overrides:
        settings = QuickstartArguments(**{**asdict(settings), **overrides})
    s = settings
    if pruning is None:
        pruning = PruningConfig(**sections.get("pruning", {}))
    if distillation is None:
        distillation = dict(sections.get("distillation", {}))
    torch.manual_seed(s.seed)

    print("[1/6] corpus: pydoc topics + standard library docstrings", flush=True)
    train_texts, heldout_texts = builtin_corpus(max_chars=s.max_chars)
    print("[2/6] teacher: byte-level BPE tokenizer + Llama (trained once, then cached)", flush=True)
    t = time.perf_counter()
    teacher, tokenizer, tinfo = load_or_train_teacher(
        s.cache_dir,
        train_texts,
        TeacherSettings(
            vocab_size=s.vocab_size,
            hidden_size=s.teacher_hidden_size,
            intermediate_size=s.teacher_intermediate_size,
            num_hidden_layers=s.teacher_num_hidden_layers,
            num_attention_heads=s.teacher_num_attention_heads,
            num_key_value_heads=s.teacher_num_key_value_heads,
            seq_len=s.seq_len,
            batch_size=s.batch_size,
            steps=s.teacher_steps,
            learning_rate=s.teacher_learning_rate,
            seed=s.seed,
        ),  # fmt: skip
    )
    timings["teacher"] = time.perf_counter() - t
    print(
        f"      {'loaded from ' if tinfo['cached'] else 'trained and cached in '}{tinfo['path']}", flush=True
    )
    held_blocks = tokenize_and_pack(heldout_texts, tokenizer, s.seq_len)
    curve_blocks = held_blocks[: s.eval_blocks]
    results: dict[str, Any] = {
        "teacher": _entry(teacher, perplexity_on_blocks(teacher, held_blocks, desc="eval teacher"))
    }

    print("[3/6] importance estimation and pruning", flush=True)
    t = time.perf_counter()
    calib = calibration_batches(train_texts, tokenizer, s.calibration_samples, s.seq_len, batch_size=16)
    student = copy.deepcopy(teacher)
    scores = estimate_importance(student, calib, pruning)
    with torch.no_grad():
        student = prune_model(student, pruning, scores)
    timings["importance_and_pruning"] = time.perf_counter() - t
    results["pruned"] = _entry(student, perplexity_on_blocks(student, held_blocks, desc="eval pruned"))

    train_dataset = pack_texts(train_texts, tokenizer, s.seq_len)
    tokens_per_step = s.batch_size * s.seq_len
    steps = max(1, s.distill_tokens // tokens_per_step)
    every = max(1, steps // max(1, s.eval_points))
    with tempfile.TemporaryDirectory(prefix="hf-minitron-quickstart-") as work:
        print(
            f"[4/6] distillation from the teacher: {steps} steps, {steps * tokens_per_step:,} tokens",
            flush=True,
        )
        t = time.perf_counter()
        distill_curve = HeldoutLossCurve(curve_blocks, every, tokens_per_step)
        dist_args = _training_args(
            DistillationArguments, os.path.join(work, "distill"), s, steps, **distillation
        )
        trainer = DistillationTrainer(
            model=student, teacher_model=teacher, args=dist_args, train_dataset=train_dataset,
            data_collator=default_data_collator, callbacks=[distill_curve],
        )  # fmt: skip
        trainer.train()
        timings["distillation"] = time.perf_counter() - t
        student.eval()
        results["distilled"] = _entry(
            student, perplexity_on_blocks(student, held_blocks, desc="eval distilled")
        )

        print(
            f"[5/6] baseline: the same shape from scratch on the same {steps * tokens_per_step:,} tokens",
            flush=True,
        )
        t = time.perf_counter()
        scratch_config = copy.deepcopy(student.config)
        if hasattr(scratch_config, "minitron"):
            del scratch_config.minitron
        torch.manual_seed(s.seed)
        scratch = AutoModelForCausalLM.from_config(scratch_config, dtype=torch.float32)
        scratch_curve = HeldoutLossCurve(curve_blocks, every, tokens_per_step)
        scratch_overrides = {
            k: v
            for k, v in distillation.items()
            if k
            in (
                "lr_scheduler_type",
                "warmup_steps",
                "warmup_ratio",
                "weight_decay",
                "max_grad_norm",
                "adam_beta1",
                "adam_beta2",
            )
        }  # noqa: E501
        scratch_args = _training_args(TrainingArguments, os.path.join(work, "scratch"), s, steps,
                                      **{**scratch_overrides, "learning_rate": s.scratch_learning_rate})  # fmt: skip
        Trainer(model=scratch, args=scratch_args, train_dataset=train_dataset, data_collator=default_data_collator,
                callbacks=[scratch_curve]).train()  # fmt: skip
        timings["scratch"] = time.perf_counter() - t
        results["scratch"] = _entry(scratch, perplexity_on_blocks(scratch, held_blocks, desc="eval scratch"))

    results["tokens"] = {
        "teacher_training": tinfo["train_tokens"],
        "distillation": steps * tokens_per_step,
        "scratch": steps * tokens_per_step,
        "calibration": int(sum(b["input_ids"].numel() for b in calib)),
        "heldout": int(held_blocks.numel()),
    }
    results["curves"] = {
        "distill": distill_curve.points,
        "scratch": scratch_curve.points,
        "teacher": round(perplexity_on_blocks(teacher, curve_blocks, progress=False)["loss"], 4),
        "heldout_tokens": int(curve_blocks.numel() - len(curve_blocks)),
    }
    results["teacher_cached"] = bool(tinfo["cached"])
    results["teacher_train_seconds"] = tinfo["train_seconds"]
    results["settings"] = {
        "quickstart": asdict(s),
        "pruning": pruning.to_dict(),
        "distillation": distillation,
    }

    print("[6/6] writing the model, card, results.json and loss_curve.png", flush=True)
    output = Path(output_dir)
    with atomic_output_dir(output) as tmp:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        pruning.save_pretrained(tmp)
        _plot(tmp / "loss_curve.png", results)
        timings["total"] = time.perf_counter() - start
        results["wall_time_seconds"] = {k: round(v, 1) for k, v in timings.items()}
        record = {
            "model_name": output.name,
            "base_model": "quickstart teacher (Llama trained on Python's documentation, local)",
            "base_model_on_hub": False,
            "license": "apache-2.0",
            "architecture": {"before": architecture_summary(teacher), "after": architecture_summary(student)},
            "pruning": {
                "config": pruning.to_dict(),
                "importance": dict(scores.metadata or {}),
                "calibration_data": "built-in corpus (train part)",
                "calibration_samples": results["tokens"]["calibration"] // s.seq_len,
                "seq_len": s.seq_len,
            },
            "distillation": {
                "teacher": "quickstart teacher",
                "data": "built-in corpus (train part)",
                "tokens": results["tokens"]["distillation"],
                "settings": {
                    **{k: v for k, v in distillation.items()},
                    "max_steps": steps,
                    "per_device_train_batch_size": s.batch_size,
                },  # fmt: skip
            },
            "evaluations": [
                {
                    "dataset": HELDOUT_NAME,
                    "local": True,  # the built-in corpus is no Hub dataset: text only, not Hub metadata
                    "metric": "perplexity",
                    "value": results["distilled"]["heldout_perplexity"],
                }
            ],  # fmt: skip
            "comparison": [
                {
                    "model": label,
                    "parameters": results[key]["parameters"],
                    "perplexity": results[key]["heldout_perplexity"],
                }
                for key, label in ROWS
            ],  # fmt: skip
            "plot": "loss_curve.png",
            "plot_caption": "held-out loss vs training tokens: pruned + distilled vs the same shape from scratch",
            "commands": [command or f"hf-minitron quickstart --output {output}"],
        }
        write_model_card(tmp, record)
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(format_summary(results), flush=True)
    return results
