"""Minitron on real weights: Qwen2.5-Coder-1.5B pruned to the size of Qwen2.5-Coder-0.5B, peers, distillation.

Needs `python benchmarks/real_models/fetch.py` first (weights in $HF_MINITRON_REAL_CACHE, dequantized Q4_K_M).
Data: this machine's Python standard library sources (code + docstrings) and Python's docs (`pydoc_data.topics`),
split by file into calibration / training / held-out (a file is in exactly one split). Every figure is held-out
perplexity on the same token blocks. Stages (each result is saved to <workdir>/results.json and reused):
  baselines  the 1.5B teacher and the real 0.5B
  prune      hf-minitron activation / taylor / magnitude at Minitron's practical shape for the 0.5B's parameter
             count, random channels/neurons (seeded), depth-only by block importance (ShortGPT) at equal size;
             time per criterion; each student saved (bf16) for the distillation stage
  torch-pruning  Torch-Pruning's documented LLM path (MetaPruner + GroupNorm / GroupTaylor), in a subprocess
             with a time limit; the reason is recorded when it gives no loadable model
  search     search_architectures on the real model, ranked right after pruning (no retraining per candidate)
  distill    DistillationTrainer from the 1.5B on the training split, held-out perplexity vs tokens seen
             (`--bf16` autocast, `--offline-top-k` stored teacher, `--deadline HH:MM` UTC stop, `--tag` results key,
             `--continue-from` a later leg, `--train-units functions` documented functions as training documents,
             `--generate-at-eval` the code prompts completed and tested at each evaluation)
Prints the results as JSON on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "real_models"))
from fetch import MODELS, hf_path  # noqa: E402

TEACHER = "qwen2.5-coder-1.5b-instruct-q4_k_m"
REFERENCE = "qwen2.5-coder-0.5b-instruct-q4_k_m"
CRITERIA = ("activation", "taylor", "magnitude")


def log(*args) -> None:
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


def documents() -> list[tuple[str, str]]:
    """(name, text) for every standard-library .py file (tests and site-packages excluded) and docs topic."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        parts = rel.split("/")
        # tests and generated tables (encodings) would dominate a few thousand tokens; not code people write
        if parts[0] in ("site-packages", "test", "encodings") or {"test", "tests", "idle_test"} & set(parts):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if len(text) > 200:
            docs.append((f"stdlib/{rel}", text))
    from pydoc_data.topics import topics

    docs += [(f"pydoc/{k}", v) for k, v in sorted(topics.items()) if len(v) > 200]
    return docs


def split_documents(docs, seed: int = 0, heldout: float = 0.05, calibration: float = 0.05):
    """Split by file (seeded shuffle): held-out first, then calibration, the rest training."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_h, n_c = max(1, int(len(docs) * heldout)), max(1, int(len(docs) * calibration))
    pick = lambda idx: [docs[i] for i in idx]  # noqa: E731
    return pick(order[:n_h]), pick(order[n_h : n_h + n_c]), pick(order[n_h + n_c :])


def function_units(docs, seed: int = 0, max_chars: int = 1500) -> list[tuple[str, str]]:
    """Every module- and class-level function with a docstring in the standard-library documents, dedented, as
    its own document (shuffled): the shape of the code prompts, which the starts of files mostly lack."""
    import ast
    import textwrap

    units = []
    for name, text in docs:
        if not name.startswith("stdlib/"):
            continue
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        scopes = [tree] + [n for n in tree.body if isinstance(n, ast.ClassDef)]
        for scope in scopes:
            for node in scope.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(node):
                    src = ast.get_source_segment(text, node, padded=True)
                    if src and len(src) <= max_chars:
                        units.append((f"{name}:{node.name}", textwrap.dedent(src)))
    random.Random(seed).shuffle(units)
    return units


def blocks_from(docs, tokenizer, seq_len: int, n_blocks: int, max_chars: int | None = None) -> torch.Tensor:
    """The first `n_blocks` packed blocks (EOS between documents), tokenizing only as many documents as needed;
    `max_chars` keeps the start of each document so that a few blocks still cover many files."""
    from hf_minitron.data import tokenize_and_pack

    texts, chars = [], 0
    for _, text in docs:
        text = text[:max_chars] if max_chars else text
        texts.append(text)
        chars += len(text)
        if chars > 4 * seq_len * n_blocks * 1.5:  # ~3-4 characters per token for code
            blocks = tokenize_and_pack(texts, tokenizer, seq_len)
            if len(blocks) >= n_blocks:
                return blocks[:n_blocks]
    blocks = tokenize_and_pack(texts, tokenizer, seq_len)
    if len(blocks) < n_blocks:
        raise ValueError(f"the split gives {len(blocks)} blocks of {seq_len} tokens, {n_blocks} requested")
    return blocks


def load(name_or_path, dtype=torch.bfloat16):
    from transformers import AutoModelForCausalLM

    path = hf_path(name_or_path) if name_or_path in MODELS else name_or_path
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


def n_params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def heldout_ppl(model, blocks, batch_size: int) -> dict:
    from hf_minitron.evaluation import perplexity_on_blocks

    t0 = time.perf_counter()
    out = perplexity_on_blocks(model, blocks, batch_size=batch_size, progress=False)
    return {
        "loss": round(out["loss"], 4),
        "perplexity": round(out["perplexity"], 2),
        "eval_s": round(time.perf_counter() - t0, 1),
    }


class Results:
    """results.json in the work folder, rewritten (atomically) after every step so a later run resumes."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def __contains__(self, key):
        return key in self.data

    def __setitem__(self, key, value):
        if self.path.exists():  # merge with what another stage running beside this one has written
            self.data = {**json.loads(self.path.read_text()), **self.data}
        self.data[key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        os.replace(tmp, self.path)
        log(key, json.dumps(value)[:400])


def calibration(opts, tokenizer, calib_docs):
    blocks = blocks_from(calib_docs, tokenizer, opts.seq_len, opts.calibration_blocks, opts.max_doc_chars)
    return [
        {"input_ids": b, "attention_mask": torch.ones_like(b)}
        for b in blocks.split(opts.calibration_batch_size)
    ]


def stage_baselines(opts, res, eval_blocks):
    for key, name in (("teacher", TEACHER), ("qwen_0.5b", REFERENCE)):
        if key in res:
            continue
        model = load(name)
        res[key] = {
            "model": MODELS[name].description,
            "params": n_params(model),
            **heldout_ppl(model, eval_blocks, opts.eval_batch_size),
        }
        del model


def stage_prune(opts, res, eval_blocks, batches, target):
    from hf_minitron import ImportanceScores, PruningConfig, estimate_importance, prune_model
    from hf_minitron.search import count_parameters, resolve_target_params

    teacher_config = load_config(TEACHER)
    practical = resolve_target_params(teacher_config, PruningConfig(target_params=target))
    shape = {"hidden_size": practical.hidden_size, "intermediate_size": practical.intermediate_size}
    depth = min(
        range(1, teacher_config.num_hidden_layers),
        key=lambda n: abs(count_parameters(teacher_config, {"num_hidden_layers": n}) - target),
    )
    runs = {c: PruningConfig(**shape, importance=c) for c in CRITERIA}
    runs["random"] = PruningConfig(**shape)
    runs["depth_block_importance"] = PruningConfig(num_hidden_layers=depth, depth_metric="block_importance")
    for key, config in runs.items():
        if f"pruned/{key}" in res:
            continue
        model = load(TEACHER)
        torch.manual_seed(0)
        t0 = time.perf_counter()
        if key == "random":
            c = model.config
            scores = ImportanceScores(
                neurons=torch.rand(
                    c.num_hidden_layers, c.intermediate_size, generator=torch.Generator().manual_seed(0)
                ),
                channels=torch.rand(c.hidden_size, generator=torch.Generator().manual_seed(1)),
                metadata={"importance": "random", "seed": 0},
            )
        else:
            scores = estimate_importance(model, batches if config.importance != "magnitude" else None, config)
        t1 = time.perf_counter()
        prune_model(model, config, scores)
        t2 = time.perf_counter()
        out = Path(opts.workdir) / "students" / key
        model.save_pretrained(out)
        entry = {
            "config": {k: v for k, v in config.to_dict().items() if v is not None}
            if hasattr(config, "to_dict")
            else str(config),
            "shape": {
                k: getattr(model.config, k)
                for k in (
                    "hidden_size",
                    "intermediate_size",
                    "num_attention_heads",
                    "num_key_value_heads",
                    "num_hidden_layers",
                )
            },
            "params": n_params(model),
            "importance_s": round(t1 - t0, 1),
            "prune_s": round(t2 - t1, 1),
            "path": str(out),
            **heldout_ppl(model, eval_blocks, opts.eval_batch_size),
        }
        if key == "depth_block_importance":
            entry["kept_layers"] = (
                model.config.minitron.get("kept_layers")
                if isinstance(getattr(model.config, "minitron", None), dict)
                else None
            )
        res[f"pruned/{key}"] = entry
        del model, scores


def stage_search(opts, res, eval_blocks, batches, target):
    """Minitron's search on the real model, ranked right after pruning (steps_per_candidate=0: retraining every
    candidate does not fit this CPU); the best shape is saved as the student `search_best`."""
    from hf_minitron import PruningConfig, estimate_importance
    from hf_minitron.search import search_architectures

    if "search" in res:
        return
    model = load(TEACHER)
    config = PruningConfig(target_params=target, importance="activation")
    t0 = time.perf_counter()
    scores = estimate_importance(model, batches, config)
    t1 = time.perf_counter()
    result = search_architectures(
        model,
        scores,
        target,
        eval_dataset=train_dataset(eval_blocks[: opts.search_eval_blocks]),
        steps_per_candidate=0,
        max_candidates=opts.search_candidates,
        pruning_config=config,
        eval_batch_size=opts.eval_batch_size,
        keep_best_model=True,
        results_file=Path(opts.workdir) / "search_progress.json",
    )
    t2 = time.perf_counter()
    del model
    best = result.best_model
    out = Path(opts.workdir) / "students" / "search_best"
    best.save_pretrained(out)
    ranking = [
        {**r.to_dict(), "perplexity": round(float(torch.exp(torch.tensor(r.loss))), 2)}
        for r in result.ranking
    ]
    res["search"] = {
        "importance": "activation (every axis)",
        "eval_tokens": int(eval_blocks[: opts.search_eval_blocks].numel()),
        "importance_s": round(t1 - t0, 1),
        "search_s": round(t2 - t1, 1),
        "ranking": ranking,
        "failures": [f.to_dict() for f in result.failures],
    }
    res["pruned/search_best"] = {
        "shape": ranking[0],
        "params": n_params(best),
        "path": str(out),
        **heldout_ppl(best, eval_blocks, opts.eval_batch_size),
    }


def load_config(name):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(hf_path(name))


def _text(x) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else (x or "")


def stage_torch_pruning(opts, res, target, batches):
    """Torch-Pruning's examples/LLMs/prune_llm.py path, run in a subprocess with a wall-time limit."""
    import importlib.metadata as md

    from safetensors.torch import save_file

    ids = torch.cat([b["input_ids"] for b in batches]).contiguous()
    save_file({"input_ids": ids}, str(Path(opts.workdir) / "calibration.safetensors"))

    teacher_config = load_config(TEACHER)
    for importance in ("magnitude", "taylor"):
        key = f"torch_pruning/{importance}"
        if key in res:
            continue
        first = res.data.get("torch_pruning/magnitude", {})
        if (
            importance == "taylor"
            and first.get("returncode") == "timeout"
            and '"step": "prune"' not in first["reason"]
        ):
            # the dependency graph (built in MetaPruner's constructor, before any importance) never finished
            res[key] = {
                "skipped": "MetaPruner's dependency-graph construction did not finish for magnitude; "
                "Taylor builds the same graph first",
                "loadable": False,
            }
            continue
        out = Path(opts.workdir) / "students" / f"tp_{importance}"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve().parent / "real_models" / "tp_prune.py"),
            str(hf_path(TEACHER)),
            importance,
            str(target),
            str(out),
            str(opts.workdir),
        ]
        t0 = time.perf_counter()
        try:
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=opts.tp_timeout, env=env)
            rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
        except subprocess.TimeoutExpired as e:
            rc, tail = (
                "timeout",
                f"no result within {opts.tp_timeout} s; last output: "
                + "".join(_text(x)[-1500:] for x in (e.stdout, e.stderr)),
            )
        entry = {
            "torch_pruning": md.version("torch-pruning"),
            "returncode": rc,
            "wall_s": round(time.perf_counter() - t0, 1),
            "target_params": target,
        }
        if rc == 0 and (out / "config.json").exists():
            try:
                model = load(out)
                entry.update(params=n_params(model), loadable=True)
                entry.update(heldout_ppl(model, EVAL_BLOCKS, opts.eval_batch_size))
                del model
            except Exception as e:  # record exactly why the saved model does not load
                entry.update(loadable=False, reason=f"{type(e).__name__}: {e}"[:1500])
        else:
            entry.update(loadable=False, reason=tail)
        entry["teacher_layers"] = teacher_config.num_hidden_layers
        res[key] = entry


def train_dataset(blocks: torch.Tensor):
    """Packed training blocks as a datasets.Dataset (every position counts)."""
    import datasets

    return datasets.Dataset.from_dict(
        {
            "input_ids": blocks.tolist(),
            "attention_mask": torch.ones_like(blocks).tolist(),
            "labels": blocks.tolist(),
        }
    )


def distill_args(
    output_dir: str,
    max_steps: int,
    batch: int,
    lr: float,
    warmup: int,
    bf16: bool = False,
    data_seed: int = 0,
    scheduler: str = "constant_with_warmup",
):
    """DistillationArguments of every run here: CPU, no checkpoints, log every step (constant LR by default)."""
    from hf_minitron import DistillationArguments

    return DistillationArguments(
        output_dir=output_dir,
        max_steps=max_steps,
        per_device_train_batch_size=batch,
        learning_rate=lr,
        lr_scheduler_type=scheduler,
        warmup_steps=warmup,
        weight_decay=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=bf16,
        seed=0,
        data_seed=data_seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def teacher_store(opts, res, teacher, ds, n_blocks: int) -> Path:
    """Run the teacher once over the training blocks and store its top-k log-probs (resumable); its cost is logged."""
    from hf_minitron.distillation.offline import TeacherLogitsArguments, compute_teacher_logits

    path = Path(opts.workdir) / f"teacher-logits-top{opts.offline_top_k}-seq{opts.seq_len}-n{n_blocks}"
    key = f"teacher_logits/{path.name}"
    t0, c0 = time.perf_counter(), time.process_time()
    compute_teacher_logits(
        teacher,
        ds,
        path,
        TeacherLogitsArguments(top_k=opts.offline_top_k, batch_size=2, blocks_per_shard=64),
        teacher_name=MODELS[TEACHER].description,
        progress=False,
    )
    if key not in res.data:
        res[key] = {
            "tokens": n_blocks * opts.seq_len,
            "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(time.process_time() - c0, 1),
            "bytes": sum(f.stat().st_size for f in path.iterdir()),
        }
    return path


def stage_distill(opts, res, eval_blocks, train_blocks, tokenizer):
    """Distill each student in `--distill` from the 1.5B (online, or from a stored top-k teacher when
    `--offline-top-k`), held-out perplexity at `--eval-steps` and when `--deadline` stops the run."""
    import copy as copy_module
    import datetime

    from transformers import TrainerCallback, default_data_collator

    from hf_minitron import DistillationTrainer, TeacherLogitsDataset

    teacher = load(TEACHER)
    ds = train_dataset(train_blocks)
    if opts.offline_top_k:
        ds = TeacherLogitsDataset(teacher_store(opts, res, teacher, ds, len(train_blocks)))
        del teacher
        teacher = None
    tokens_per_step = opts.distill_batch_size * opts.seq_len
    eval_at = set(opts.eval_steps)
    prompts = []
    if opts.generate_at_eval:
        from generate import PROMPTS, SIMPLE_PROMPTS, check, complete

        prompts = PROMPTS + SIMPLE_PROMPTS
    deadline = None
    if opts.deadline:
        hour, minute = map(int, opts.deadline.split(":"))
        now = datetime.datetime.now(datetime.timezone.utc)
        stop = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        deadline = (stop + datetime.timedelta(days=1) if stop < now else stop).timestamp()  # past midnight
    for key in opts.distill:
        rkey = f"distilled{opts.tag}/{key}"
        if rkey in res:
            continue
        if (
            opts.continue_from is not None
        ):  # a later leg of a long run: start where that run's student stopped
            before = res.data[f"distilled{opts.continue_from}/{key}"]
            student = load(before["path"], dtype=torch.float32)
            curve, offset = [dict(p, leg=0) for p in before["curve"]], before["tokens"]
        else:
            student = load(res.data[f"pruned/{key}"]["path"], dtype=torch.float32)
            curve = [{"tokens": 0, **{k: res.data[f"pruned/{key}"][k] for k in ("loss", "perplexity")}}]
            offset = 0
        t_start, c_start = time.perf_counter(), time.process_time()

        class Curve(TrainerCallback):
            def __init__(self, model, points, rkey, offset):
                self.model, self.points, self.rkey, self.offset = model, points, rkey, offset
                self.t0, self.c0 = time.perf_counter(), time.process_time()
                self.copy = None  # one bf16 copy, refilled at each evaluation (a deepcopy each time grew RSS)

            def on_step_end(self, args, state, control, **kw):
                late = deadline is not None and time.time() > deadline
                if state.global_step in eval_at or late or state.global_step == state.max_steps:
                    # evaluated in bf16 like every other row (and the saved student): a copy, training stays fp32
                    if self.copy is None:
                        self.copy = copy_module.deepcopy(self.model).to(torch.bfloat16).eval()
                    else:
                        self.copy.load_state_dict(self.model.state_dict())
                    point = heldout_ppl(self.copy, eval_blocks, opts.eval_batch_size)
                    if prompts:
                        t_gen = time.perf_counter()
                        point["completions"] = complete(self.copy, tokenizer, prompts, max_new_tokens=96)
                        point["generate_s"] = round(time.perf_counter() - t_gen, 1)
                        for c in point["completions"]:  # runs the model's code: see generate.py
                            c.update(check(c["prompt"], c["completion"]))
                        point["passed"] = sum(c["passed"] for c in point["completions"])
                    self.points.append(
                        {
                            "tokens": self.offset + state.global_step * tokens_per_step,
                            "step": state.global_step,
                            "wall_s": round(time.perf_counter() - self.t0, 1),
                            "cpu_s": round(time.process_time() - self.c0, 1),
                            **point,
                        }
                    )
                    res[f"{self.rkey}/partial"] = {"curve": self.points}
                    self.model.train()
                if late:
                    control.should_training_stop = True

        args = distill_args(
            str(Path(opts.workdir) / "trainer" / key),
            max_steps=opts.distill_steps,
            batch=opts.distill_batch_size,
            lr=opts.lr,
            warmup=opts.warmup_steps,
            bf16=opts.bf16,
            data_seed=opts.data_seed,
            scheduler=opts.lr_scheduler,
        )
        trainer = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=args,
            train_dataset=ds,
            data_collator=default_data_collator,
            callbacks=[Curve(student, curve, rkey, offset)],
        )
        trainer.train()
        train_s, train_cpu = time.perf_counter() - t_start, time.process_time() - c_start
        out = Path(opts.workdir) / f"distilled{opts.tag}" / key
        student.to(torch.bfloat16).save_pretrained(out)
        tokenizer.save_pretrained(out)
        logs = [
            {k: v for k, v in h.items() if k in ("step", "loss", "distill_loss", "lm_loss")}
            for h in trainer.state.log_history
        ]
        steps = trainer.state.global_step
        res[rkey] = {
            "steps": steps,
            "tokens": offset + steps * tokens_per_step,
            "continues": f"distilled{opts.continue_from}/{key}" if opts.continue_from is not None else None,
            "unique_tokens": len(train_blocks) * opts.seq_len,
            "teacher": f"stored top-{opts.offline_top_k}" if opts.offline_top_k else "online",
            "bf16_autocast": opts.bf16,
            "train_wall_s": round(train_s, 1),
            "train_cpu_s": round(train_cpu, 1),
            "lr": opts.lr,
            "warmup_steps": opts.warmup_steps,
            "lr_scheduler": opts.lr_scheduler,
            "batch": opts.distill_batch_size,
            "seq_len": opts.seq_len,
            "curve": curve,
            "log": logs,
            "path": str(out),
        }
        del student, trainer


def plot(res, path: Path, tag: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, value in res.data.items():
        if key.startswith(f"distilled{tag}/") and not key.endswith("/partial"):
            xs = [p["tokens"] for p in value["curve"]]
            ax.plot(
                xs,
                [p["perplexity"] for p in value["curve"]],
                marker="o",
                label=f"pruned ({key.split('/')[1]}) + distilled",
            )
    for key, style in (("teacher", "--"), ("qwen_0.5b", ":")):
        if key in res:
            ax.axhline(
                res.data[key]["perplexity"],
                linestyle=style,
                color="gray" if key == "teacher" else "black",
                label=f"{key} (real)",
            )
    ax.set_yscale("log")
    ax.set_xlabel("distillation tokens seen")
    ax.set_ylabel("held-out perplexity (log)")
    ax.set_title("Qwen2.5-Coder-1.5B -> 0.5B size, Q4_K_M weights, 2-core CPU", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


EVAL_BLOCKS = None


def main(argv=None) -> int:
    global EVAL_BLOCKS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir",
        default=os.path.join(os.environ.get("HF_MINITRON_REAL_CACHE", "/work/cache/real-models"), "bench"),
    )
    parser.add_argument("--stages", nargs="*", default=["baselines", "prune", "torch-pruning", "distill"])
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--eval-blocks", type=int, default=16)
    parser.add_argument(
        "--max-doc-chars", type=int, default=2000, help="eval/calibration: start of each file only"
    )
    parser.add_argument("--eval-batch-size", type=int, default=4)
    parser.add_argument("--calibration-blocks", type=int, default=8)
    parser.add_argument("--calibration-batch-size", type=int, default=2)
    parser.add_argument("--distill", nargs="*", default=["activation", "taylor", "magnitude"])
    parser.add_argument("--distill-steps", type=int, default=10)
    parser.add_argument("--distill-batch-size", type=int, default=2)
    parser.add_argument("--eval-steps", type=int, nargs="*", default=[5, 10])
    parser.add_argument("--lr", type=float, default=3e-5, help="1e-4 was unstable, 3e-4 diverged")
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument(
        "--lr-scheduler", default="constant_with_warmup", help="a transformers scheduler (linear: decay to 0)"
    )
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the student (fp32 weights)")
    parser.add_argument("--offline-top-k", type=int, default=0, help="distill from a stored top-k teacher")
    parser.add_argument(
        "--train-blocks", type=int, default=None, help="unique training blocks (default: steps x batch)"
    )
    parser.add_argument(
        "--deadline", default=None, help="HH:MM UTC: stop training then (evaluated and saved)"
    )
    parser.add_argument("--tag", default="", help="suffix of the results keys (distilled<tag>/<student>)")
    parser.add_argument(
        "--continue-from",
        default=None,
        help="tag of an earlier distill run: its saved students go on training (tokens counted on from it)",
    )
    parser.add_argument(
        "--train-max-doc-chars",
        type=int,
        default=None,
        help="training blocks: start of each file only (default: --max-doc-chars; 0: whole files)",
    )
    parser.add_argument("--data-seed", type=int, default=0, help="order of the training blocks")
    parser.add_argument(
        "--train-units",
        choices=["files", "functions"],
        default="files",
        help="training documents: whole files (cut at --train-max-doc-chars) or each documented function",
    )
    parser.add_argument(
        "--generate-at-eval",
        action="store_true",
        help="complete the 12 code prompts of real_models/generate.py (greedy) at every evaluation point and run "
        "each completed function against its tests",
    )
    parser.add_argument("--search-candidates", type=int, default=8)
    parser.add_argument(
        "--search-eval-blocks", type=int, default=16, help="held-out blocks that rank candidates"
    )
    parser.add_argument("--tp-timeout", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plot", default=None, help="PNG path for the perplexity-vs-tokens curve")
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)
    from transformers import AutoTokenizer

    from hf_minitron.search import count_parameters

    Path(opts.workdir).mkdir(parents=True, exist_ok=True)
    res = Results(Path(opts.workdir) / "results.json")
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(hf_path(TEACHER))
    heldout, calib, train = split_documents(documents())
    EVAL_BLOCKS = eval_blocks = blocks_from(
        heldout, tokenizer, opts.seq_len, opts.eval_blocks, opts.max_doc_chars
    )
    target = count_parameters(load_config(REFERENCE))
    if "data" not in res:
        res["data"] = {
            "documents": {"heldout": len(heldout), "calibration": len(calib), "training": len(train)},
            "heldout_files_sample": [n for n, _ in heldout[:8]],
            "seq_len": opts.seq_len,
            "eval_tokens": int(eval_blocks.numel()),
            "calibration_tokens": opts.calibration_blocks * opts.seq_len,
            "target_params": target,
            "overlap_heldout_train_calibration": len(
                {n for n, _ in heldout} & ({n for n, _ in calib} | {n for n, _ in train})
            ),
        }
    if "baselines" in opts.stages:
        stage_baselines(opts, res, eval_blocks)
    if "prune" in opts.stages:
        stage_prune(opts, res, eval_blocks, calibration(opts, tokenizer, calib), target)
    if "search" in opts.stages:
        stage_search(opts, res, eval_blocks, calibration(opts, tokenizer, calib), target)
    if "torch-pruning" in opts.stages:
        stage_torch_pruning(opts, res, target, calibration(opts, tokenizer, calib))
    if "distill" in opts.stages:
        n_train = opts.train_blocks or opts.distill_steps * opts.distill_batch_size
        train_chars = opts.max_doc_chars if opts.train_max_doc_chars is None else opts.train_max_doc_chars
        if opts.train_units == "functions":
            train = function_units(train, seed=opts.data_seed)
            train_chars = 0
        train_blocks = blocks_from(train, tokenizer, opts.seq_len, n_train, train_chars or None)
        stage_distill(opts, res, eval_blocks, train_blocks, tokenizer)
    if opts.plot:
        plot(res, Path(opts.plot), opts.tag)
    res.data.setdefault("runs", []).append(
        {"stages": opts.stages, "wall_s": round(time.perf_counter() - start, 1), "argv": sys.argv[1:]}
    )
    res["runs"] = res.data["runs"]
    print(json.dumps(res.data, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
