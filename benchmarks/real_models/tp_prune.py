"""Torch-Pruning's documented LLM path (examples/LLMs/prune_llm.py) on a local checkpoint, as a peer of hf-minitron.

Usage: tp_prune.py MODEL_DIR {magnitude,taylor} TARGET_PARAMS OUT_DIR WORKDIR
MetaPruner with GroupNormImportance (magnitude) or GroupTaylorImportance (one backward on the calibration blocks
in WORKDIR/calibration.safetensors), `num_heads` per projection, lm_head ignored, heads and head dims kept (the
shape hf-minitron prunes to); the pruning ratio is chosen so that the parameter count meets TARGET_PARAMS. After
`g.prune()` the attributes and config are updated as the example does, then `save_pretrained`. Prints JSON lines.
"""

from __future__ import annotations

import json
import sys
import time

import torch


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def main() -> int:
    model_dir, importance_name, target, out_dir, workdir = sys.argv[1:6]
    target = int(target)
    torch.set_num_threads(2)
    import torch_pruning as tp
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from hf_minitron.search import count_parameters

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    c = model.config
    # the uniform ratio on hidden and MLP whose shape has the target's parameter count (heads kept)
    ratio = min(
        (r / 1000 for r in range(1, 1000)),
        key=lambda r: abs(
            count_parameters(
                c,
                {
                    "hidden_size": round(c.hidden_size * (1 - r) / 4) * 4,
                    "intermediate_size": round(c.intermediate_size * (1 - r) / 4) * 4,
                },
            )
            - target
        ),
    )
    emit(step="ratio", pruning_ratio=ratio)
    calib = load_file(f"{workdir}/calibration.safetensors")["input_ids"]
    example = calib[:1, :16]
    num_heads = {}
    for name, m in model.named_modules():
        if name.endswith("self_attn"):
            num_heads[m.q_proj] = c.num_attention_heads
            num_heads[m.k_proj] = c.num_key_value_heads
            num_heads[m.v_proj] = c.num_key_value_heads
    imp = (
        # the example's GroupNormImportance is called GroupMagnitudeImportance in torch-pruning 1.6
        tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean")
        if importance_name == "magnitude"
        else tp.importance.GroupTaylorImportance()
    )
    kwargs = dict(
        example_inputs=example,
        importance=imp,
        global_pruning=False,
        pruning_ratio=ratio,
        ignored_layers=[model.lm_head],
        num_heads=num_heads,
        prune_num_heads=False,
        prune_head_dims=False,
        head_pruning_ratio=0.0,
        round_to=4,
    )
    t0 = time.perf_counter()
    try:  # exactly the documented call (no output_transform)
        pruner = tp.pruner.MetaPruner(model, **kwargs)
        emit(step="documented_call", ok=True, s=round(time.perf_counter() - t0, 1))
    except Exception as e:
        emit(
            step="documented_call",
            ok=False,
            error=f"{type(e).__name__}: {e}"[:500],
            s=round(time.perf_counter() - t0, 1),
        )
        t0 = time.perf_counter()
        pruner = tp.pruner.MetaPruner(model, output_transform=lambda out: out.logits, **kwargs)
        emit(step="with_output_transform", ok=True, s=round(time.perf_counter() - t0, 1))
    if importance_name == "taylor":
        model.zero_grad()
        for batch in calib.split(2):
            model(input_ids=batch, labels=batch).loss.backward()
    t0 = time.perf_counter()
    for group in pruner.step(interactive=True):
        group.prune()
    emit(step="prune", s=round(time.perf_counter() - t0, 1))
    # attribute / config updates as in the example
    model.config.hidden_size = model.lm_head.in_features
    for name, m in model.named_modules():
        if name.endswith("mlp"):
            model.config.intermediate_size = m.gate_proj.out_features
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    emit(step="pruned", params=params, hidden=model.config.hidden_size, mlp=model.config.intermediate_size)
    model.zero_grad(set_to_none=True)
    model.save_pretrained(out_dir)
    emit(step="saved", path=out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
