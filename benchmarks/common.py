"""What the importance benchmarks share: padded random calibration batches, a timer, a plain forward."""

from __future__ import annotations

import time

import torch


def batches_for(args) -> list[dict[str, torch.Tensor]]:
    """`args.batches` random batches of `args.batch_size` x `args.seq` ids; a quarter of row 0 is padding."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(args.batches):
        ids = torch.randint(3, args.vocab, (args.batch_size, args.seq), generator=g)
        mask = torch.ones_like(ids)
        mask[0, -args.seq // 4 :] = 0  # some padding, as real calibration batches have
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds: all threads, less sensitive to other load on a shared machine)."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def plain(model, batches, **kw) -> None:
    """The reference: a no-grad forward over the same batches."""
    with torch.no_grad():
        for b in batches:
            model(**b, use_cache=False, **kw)
