"""Two CPU processes (torchrun, gloo) distill a few steps and end with the same student weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
from tiny_models import tiny_model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_two_processes_end_with_identical_weights(tmp_path):
    worker = os.path.join(os.path.dirname(__file__), "distill_worker.py")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        worker,
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    initial = tiny_model("llama", seed=2, num_hidden_layers=2).state_dict()
    assert rank0.keys() == rank1.keys() == initial.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert any(not torch.equal(rank0[k], initial[k]) for k in rank0)  # it trained
