"""Importance estimation cost vs a plain no-grad forward over the same batches, side by side; prints JSON.

Measured on a randomly initialized Llama-shaped model, runs interleaved (plain, ours, torch-pruning, ...) and
the median of `--repeats` taken:
  * plain forward (full logits) and plain forward of the trunk (`logits_to_keep=1`, no full-vocabulary head);
  * `estimate_importance` for width targets (neurons, heads, channels) plus block-importance depth, one pass;
  * torch-pruning's `ActivationImportance` hooks (it sums |input| of every Linear) over the same batches, and
    its `MetaPruner` on the same model when its tracer handles it (the error is recorded otherwise).

  * with `--baseline DIR` (a checkout of an earlier version, e.g. `git worktree add /tmp/v010 39206e5` for
    0.1.0), that version's `estimate_importance` on the same model and batches, interleaved in the same run.

    python benchmarks/bench_importance.py [--hidden 1024 --layers 8 --batches 4 --seq 256 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from common import add_calibration_args, batches_for, plain, timed  # noqa: E402

from hf_minitron import PruningConfig, estimate_importance, prune_model  # noqa: E402


def build(args) -> torch.nn.Module:
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(args.seq, 512),
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.dtype)).eval()


def load_baseline(path: str):
    """An earlier version's `estimate_importance`, importable beside this one: its package copied under the
    name `hf_minitron_baseline` (absolute imports renamed), so both run on the same model in one process."""
    import importlib
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="hf_minitron_baseline_")
    target = os.path.join(root, "hf_minitron_baseline")
    shutil.copytree(os.path.join(path, "hf_minitron"), target)
    for folder, _, files in os.walk(target):
        for name in files:
            if name.endswith(".py"):
                file = os.path.join(folder, name)
                with open(file, encoding="utf-8") as f:
                    text = f.read().replace("hf_minitron.", "hf_minitron_baseline.")
                with open(file, "w", encoding="utf-8") as f:
                    f.write(text)
    sys.path.insert(0, root)
    module = importlib.import_module("hf_minitron_baseline")
    return module.estimate_importance, module.PruningConfig


def torch_pruning_hooks(model, batches):
    import torch_pruning as tp

    imp = tp.importance.ActivationImportance()
    with torch.no_grad(), imp.compute_importance(model):
        for b in batches:
            model(**b, use_cache=False)


def torch_pruning_prune(args, batches) -> dict:
    """torch-pruning's full path on a fresh copy: dependency graph, activation importance, MetaPruner.step()."""
    import torch_pruning as tp

    model = build(args)
    example = {"input_ids": batches[0]["input_ids"][:1, :32]}
    try:
        start = time.perf_counter()
        imp = tp.importance.ActivationImportance()
        with torch.no_grad(), imp.compute_importance(model):
            for b in batches:
                model(**b, use_cache=False)
        num_heads = {layer.self_attn.q_proj: args.heads for layer in model.model.layers}
        num_heads.update({layer.self_attn.k_proj: args.kv_heads for layer in model.model.layers})
        num_heads.update({layer.self_attn.v_proj: args.kv_heads for layer in model.model.layers})
        pruner = tp.pruner.MetaPruner(
            model,
            example_inputs=example,
            importance=imp,
            pruning_ratio=0.25,
            ignored_layers=[model.lm_head],
            num_heads=num_heads,
            prune_head_dims=False,
            prune_num_heads=False,
            global_pruning=False,
            output_transform=lambda out: out.logits,
        )
        pruner.step()
        elapsed = time.perf_counter() - start
        with torch.no_grad():
            model(**batches[0], use_cache=False)
        return {
            "seconds": round(elapsed, 3),
            "ok": True,
            "hidden_size_after": model.model.embed_tokens.weight.shape[1],
        }
    except Exception as error:  # recorded, not hidden: the comparison then only covers the hooks
        return {"ok": False, "error": f"{type(error).__name__}: {str(error)[:300]}"}


def _child(fn, fn_args, queue):
    queue.put(fn(*fn_args))


def run_with_timeout(fn, fn_args, timeout: float) -> dict:
    """Run `fn` in a child process; a result dict, or a record that it did not finish in time."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(fn, fn_args, queue))
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        child.join()
        return {"ok": False, "error": f"did not finish within {timeout:.0f} s (killed)"}
    return queue.get() if not queue.empty() else {"ok": False, "error": f"exit code {child.exitcode}"}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--intermediate", type=int, default=2816)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--dtype", default="float32")
    add_calibration_args(p, batch_size=4, seq=256)
    p.add_argument("--skip-torch-pruning", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--baseline", help="checkout of an earlier version to time side by side")
    p.add_argument("--tp-timeout", type=float, default=300, help="limit for torch-pruning's MetaPruner run")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    model = build(args)
    batches = batches_for(args)
    target = PruningConfig(
        hidden_size=args.hidden * 3 // 4,
        intermediate_size=args.intermediate * 3 // 4,
        num_attention_heads=args.heads // 2,
        num_key_value_heads=args.kv_heads // 2,
        num_hidden_layers=args.layers - 2,
        importance="activation",  # Minitron's forward-only criterion is what is measured against a forward
    )
    runs = {"plain_forward": [], "plain_forward_trunk": [], "estimate_importance": []}
    if not args.skip_torch_pruning:
        runs["torch_pruning_activation_hooks"] = []
    if args.baseline:
        base_estimate, base_config = load_baseline(args.baseline)
        base_target = base_config(
            **{k: v for k, v in target.to_dict().items() if k in base_config().to_dict()}
        )
        runs["baseline_estimate_importance"] = []
    plain(model, batches[:1])  # warm-up
    holder = {}
    for repeat in range(args.repeats):
        runs["plain_forward"].append(timed(lambda: plain(model, batches)))
        runs["plain_forward_trunk"].append(timed(lambda: plain(model, batches, logits_to_keep=1)))
        order = ["ours", "baseline"] if args.baseline else ["ours"]
        for which in order if repeat % 2 == 0 else order[::-1]:  # alternate, so drift cancels in the pairs
            if which == "ours":
                runs["estimate_importance"].append(
                    timed(lambda: holder.update(s=estimate_importance(model, batches, target)))
                )
            else:
                runs["baseline_estimate_importance"].append(
                    timed(lambda: holder.update(b=base_estimate(model, batches, base_target)))
                )
        if not args.skip_torch_pruning:
            runs["torch_pruning_activation_hooks"].append(timed(lambda: torch_pruning_hooks(model, batches)))
    wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    n_params = sum(p.numel() for p in model.parameters())
    scores = holder["s"]
    prune_seconds, _ = timed(lambda: prune_model(model, target, scores))
    result = {
        "model": {
            "params": n_params,
            "hidden": args.hidden,
            "intermediate": args.intermediate,
            "layers": args.layers,
            "heads": args.heads,
            "kv_heads": args.kv_heads,
            "vocab": args.vocab,
            "dtype": args.dtype,
        },
        "data": {"batches": args.batches, "batch_size": args.batch_size, "seq": args.seq},
        "threads": torch.get_num_threads(),
        "wall_seconds_median": {k: round(v, 3) for k, v in wall.items()},
        "cpu_seconds_median": {k: round(v, 3) for k, v in cpu.items()},
        "wall_seconds_runs": {k: [round(w, 2) for w, _ in v] for k, v in runs.items()},
        "ratio_estimate_vs_plain_forward": {
            "wall": round(wall["estimate_importance"] / wall["plain_forward"], 3),
            "cpu": round(cpu["estimate_importance"] / cpu["plain_forward"], 3),
        },
        "ratio_estimate_vs_plain_trunk_paired": round(
            statistics.median(
                a[0] / b[0] for a, b in zip(runs["estimate_importance"], runs["plain_forward_trunk"])
            ),
            3,
        ),
        "ratio_estimate_vs_plain_trunk": {
            "wall": round(wall["estimate_importance"] / wall["plain_forward_trunk"], 3),
            "cpu": round(cpu["estimate_importance"] / cpu["plain_forward_trunk"], 3),
        },
        "prune_model_seconds": round(prune_seconds, 3),
        "axes": sorted(
            n for n in ("neurons", "heads", "channels", "layers") if getattr(scores, n) is not None
        ),
    }
    if args.baseline:  # per repeat, the two ran back to back: the median of those ratios resists drift
        pairs = list(zip(runs["estimate_importance"], runs["baseline_estimate_importance"]))
        result["ratio_estimate_vs_baseline"] = {
            "wall": round(statistics.median(a[0] / b[0] for a, b in pairs), 3),
            "cpu": round(statistics.median(a[1] / b[1] for a, b in pairs), 3),
        }
        same = all(
            torch.allclose(getattr(holder["b"], n), scores.get(n), rtol=1e-4, atol=1e-6)
            for n in ("neurons", "heads", "channels", "layers")
        )
        result["baseline_scores_equal"] = same
    if not args.skip_torch_pruning:
        result["ratio_torch_pruning_hooks_vs_plain_forward"] = {
            "wall": round(wall["torch_pruning_activation_hooks"] / wall["plain_forward"], 3),
            "cpu": round(cpu["torch_pruning_activation_hooks"] / cpu["plain_forward"], 3),
        }
        result["torch_pruning_meta_pruner"] = run_with_timeout(
            torch_pruning_prune, (args, batches), args.tp_timeout
        )
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
