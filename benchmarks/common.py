"""What the benchmarks share: calibration arguments and batches, timers, and peak memory in a fresh process."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

MiB = 2**20


def add_calibration_args(parser: argparse.ArgumentParser, batch_size: int = 2, seq: int = 128) -> None:
    """The calibration batches every importance benchmark times, and how often it repeats the timing."""
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--seq", type=int, default=seq)
    parser.add_argument("--repeats", type=int, default=3)


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


def interleaved(runs: dict, repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds of each run, `repeats` times in turn after one warm-up each, so that load drifts
    hit every run alike."""
    for fn in runs.values():  # warm-up (lazy initialisation, allocator)
        fn()
    times = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            wall, used = timed(fn)
            times[name].append(wall)
            cpu[name].append(used)
    return times, cpu


def plain(model, batches, **kw) -> None:
    """The reference: a no-grad forward over the same batches."""
    with torch.no_grad():
        for b in batches:
            model(**b, use_cache=False, **kw)


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS now, VmHWM the peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> bool:
    """Reset VmHWM (Linux clear_refs), so that the peak covers only what runs next."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def in_fresh_process(script: str, argv: list[str] | None) -> dict:
    """Run `script --child ARGV` and return its JSON: nothing this process did inflates the child's peak."""
    argv = list(argv if argv is not None else sys.argv[1:])
    out = subprocess.run([sys.executable, script, "--child", *argv], capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(out.returncode)
    return json.loads(out.stdout)
