"""Two CPU processes (torchrun, gloo) distill a few steps and end with the same student weights."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from tiny_models import tiny_model

needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="DeepSpeed is not installed (pip install 'hf-minitron[deepspeed]')",
)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torchrun(tmp_path, mode: str) -> None:
    """Run tests/distill_worker.py in `mode` on two CPU processes (gloo)."""
    worker = os.path.join(os.path.dirname(__file__), "distill_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           worker, str(tmp_path), mode]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_same_global_batch(tmp_path):
    """DDP + the projection's own gradient reduction give the single-process weights (token-weighted over ranks)."""
    from distill_worker import distill_run
    from safetensors.torch import load_file

    worker = os.path.join(os.path.dirname(__file__), "distill_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           worker, str(tmp_path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (load_file(tmp_path / f"train-rank{r}.safetensors") for r in (0, 1))
    single = distill_run(tmp_path / "single", world_size=1)
    initial = tiny_model("llama", seed=2, num_hidden_layers=2, hidden_size=32).state_dict()
    assert rank0.keys() == rank1.keys() == single.keys()
    assert {k for k in single if k.startswith("projection.")} == {"projection.weight"}
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
    assert any(not torch.equal(single[k], initial[k]) for k in initial)  # it trained


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fsdp2", "fsdp2-head"])
def test_fsdp2_sharded_student_and_teacher_give_the_unsharded_loss_and_gradients(tmp_path, mode):
    """FSDP2 `fully_shard` on CPU (gloo): layers and root sharded, and in "fsdp2-head" the lm_head as its own unit
    (resharded after forward, so the chunked loss must unshard it through FSDP for the gradient to be reduced)."""
    from distill_worker import fsdp2_loss_and_gradients
    from safetensors.torch import load_file

    worker = os.path.join(os.path.dirname(__file__), "distill_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           worker, str(tmp_path), mode]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (load_file(tmp_path / f"{mode}-rank{r}.safetensors") for r in (0, 1))
    sharded, total = rank0.pop("sharded_parameters").tolist()
    assert sharded == total > 0  # every student parameter was a DTensor shard
    rank1.pop("sharded_parameters")
    single = fsdp2_loss_and_gradients(tmp_path / "single")
    single.pop("sharded_parameters")
    assert rank0.keys() == single.keys() and "grad.lm_head.weight" in single
    for key in single:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=1e-7, msg=key)
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.distributed
@pytest.mark.slow
def test_fsdp2_student_sharded_at_load_time_trains_like_one_process(tmp_path):
    """FSDP2 without accelerate's FSDP (which needs accelerators): the student loaded with transformers'
    `DistributedConfig(fsdp_size=2)` under plain torchrun on the CPU; DistillationTrainer shards the teacher on the
    student's mesh and the whole `train()` ends with the single-process weights; `save_model` writes one checkpoint."""
    from distill_worker import distill_run
    from safetensors.torch import load_file

    torchrun(tmp_path, "fsdp2-train")
    rank0, rank1 = (load_file(tmp_path / f"fsdp2-train-rank{r}.safetensors") for r in (0, 1))
    for key in [k for k in rank0 if k.startswith("fsdp2.")]:  # every parameter of both models an FSDP2 shard
        sharded, total = rank0.pop(key).tolist()
        assert sharded == total > 0, key
        rank1.pop(key)
    single = distill_run(tmp_path / "single", world_size=1)
    assert rank0.keys() == single.keys() and "projection.weight" in single
    for key in single:
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
    saved = load_file(tmp_path / "fsdp2-train" / "model.safetensors")
    assert "lm_head.weight" in saved and not any("distill_projection" in k for k in saved)
    for key, value in saved.items():
        torch.testing.assert_close(value, rank0[key], rtol=0, atol=0, msg=key)


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("zero3", [False, pytest.param(True, marks=needs_deepspeed)], ids=["ddp", "zero3"])
def test_cli_distill_under_torchrun_saves_on_every_rank(tmp_path, zero3):
    """`save_model` is a collective under FSDP / ZeRO-3: the CLI calls it on every rank, into rank 0's staging folder.
    With `--deepspeed recipes/accelerate/ds_zero3.json` the models load partitioned (zero.Init) and the saved model is
    the gathered student."""
    from cli_fixtures import make_workspace
    from transformers import AutoModelForCausalLM

    ws = make_workspace(tmp_path)
    out = tmp_path / "distilled"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "hf_minitron.cli", "distill", "--student", str(ws["model"]), "--teacher", str(ws["model"]),
           "--data", str(ws["train"]), "--seq-len", "32", "--output", str(out), "--max_steps", "2",
           "--per_device_train_batch_size", "2", "--report_to", "none", "--save_strategy", "no", "--use_cpu",
           "--ddp_backend", "gloo", "--dataloader_pin_memory", "false", "--lm_weight", "0.5"]  # fmt: skip
    if zero3:
        cmd += ["--deepspeed", os.path.join(ROOT, "recipes", "accelerate", "ds_zero3.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu",
           "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(__file__)), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    trained, initial = (AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (out, ws["model"]))
    assert (
        trained.keys() == initial.keys()
        and trained["lm_head.weight"].shape == initial["lm_head.weight"].shape
    )
    assert not torch.equal(trained["lm_head.weight"], initial["lm_head.weight"])
    assert (out / "README.md").is_file() and not (out / "training_args.bin").exists()
    n = sum(
        v.numel() for v in initial.values()
    )  # the card counts whole models, not one rank's ZeRO-3 partitions
    assert f"({n:,} of {n:,})" in (out / "README.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    assert json.loads(result.stdout)["tokens"] == 2 * 2 * 2 * 32  # stdout is rank 0's JSON alone


@pytest.mark.distributed
@pytest.mark.slow
def test_two_processes_resume_from_a_checkpoint_identically(tmp_path):
    """4 steps straight (checkpoint at 2) vs resumed from checkpoint-2 in new processes: same weights, projection too."""
    from safetensors.torch import load_file

    worker = os.path.join(os.path.dirname(__file__), "distill_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for mode in ("checkpoint", "resume"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), worker, str(tmp_path), mode]  # fmt: skip
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "checkpoint-2" / "distill_projection.safetensors").is_file()
    straight, resumed = (
        load_file(tmp_path / f"{mode}-rank0.safetensors") for mode in ("checkpoint", "resume")
    )
    assert straight.keys() == resumed.keys() and "projection.weight" in straight
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-6, msg=key)


@pytest.mark.distributed
@pytest.mark.slow
@needs_deepspeed
def test_deepspeed_zero3_two_processes_equal_one_plain_process(tmp_path):
    """ZeRO-3 student and teacher, every parameter partitioned: the chunked loss gathers the student's and teacher's
    lm_head and hands the head's gradient to ZeRO-3; with the head untied and tied to the input embedding, and from
    stored teacher logits (no teacher), the weights after 3 steps equal a plain single-process run on the same global
    batches."""
    from distill_worker import distill_run, offline_run
    from safetensors.torch import load_file

    torchrun(tmp_path, "zero3")
    rank0, rank1 = (load_file(tmp_path / f"zero3-rank{r}.safetensors") for r in (0, 1))
    for key in [k for k in rank0 if "zero3." in k]:  # every parameter partitioned, the projection included
        partitioned, total = rank0.pop(key).tolist()
        assert partitioned == total > 0, key
        rank1.pop(key)
    single = distill_run(tmp_path / "single", world_size=1)
    tied = distill_run(tmp_path / "single-tied", world_size=1, tied=True)
    single.update({f"tied.{k}": v for k, v in tied.items()})
    single.update({f"offline.{k}": v for k, v in offline_run(tmp_path / "single-offline").items()})
    assert rank0.keys() == single.keys() and "projection.weight" in single
    initial = tiny_model("llama", seed=2, num_hidden_layers=2, hidden_size=32).state_dict()
    for key in single:
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
    assert not torch.equal(single["lm_head.weight"], initial["lm_head.weight"])  # the head trained
    assert torch.equal(single["tied.lm_head.weight"], single["tied.model.embed_tokens.weight"])


@pytest.mark.distributed
@pytest.mark.slow
@needs_deepspeed
def test_deepspeed_zero3_resume_from_a_checkpoint_identically(tmp_path):
    """ZeRO-3: 4 steps straight (checkpoint at 2) vs resumed from checkpoint-2 in new processes, projection included."""
    from safetensors.torch import load_file

    torchrun(tmp_path, "zero3-checkpoint")
    torchrun(tmp_path, "zero3-resume")
    straight, resumed = (
        load_file(tmp_path / f"zero3-{m}-rank0.safetensors") for m in ("checkpoint", "resume")
    )
    assert "projection.weight" in straight and straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-6, msg=key)
    # save_model on every rank wrote one plain transformers checkpoint: the gathered student without the projection
    saved = load_file(tmp_path / "zero3-checkpoint" / "model.safetensors")
    assert "lm_head.weight" in saved and not any("distill_projection" in k for k in saved)
    assert not (tmp_path / "zero3-checkpoint" / "training_args.bin").exists()
    for key, value in saved.items():
        torch.testing.assert_close(value, straight[key], rtol=0, atol=0, msg=key)


def test_shipped_launch_configs_load_with_accelerate_and_transformers():
    """recipes/accelerate: the accelerate configs parse as FSDP2 / ZeRO-3, the DeepSpeed JSON as ZeRO-3 with the
    16-bit gather on save (what `save_model` needs to write one checkpoint)."""
    from accelerate.commands.config.config_args import load_config_from_file

    folder = os.path.join(ROOT, "recipes", "accelerate")
    fsdp = load_config_from_file(os.path.join(folder, "fsdp2.yaml"))
    assert fsdp.distributed_type == "FSDP" and fsdp.fsdp_config["fsdp_version"] == 2
    zero3 = load_config_from_file(os.path.join(folder, "zero3.yaml"))
    assert zero3.distributed_type == "DEEPSPEED" and zero3.deepspeed_config["zero_stage"] == 3
    with open(os.path.join(folder, "ds_zero3.json")) as f:
        zero = json.load(f)["zero_optimization"]  # (HfDeepSpeedConfig would switch on zero.Init process-wide)
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("zero3", [False, pytest.param(True, marks=needs_deepspeed)], ids=["ddp", "zero3"])
def test_predict_returns_the_logits_and_loss_of_one_process(tmp_path, zero3):
    """`predict(..., return_logits=True)` on two processes equals one plain process on the same global batches: the
    logits (under ZeRO-3 every parameter partitioned, the head gathered while they are built chunk by chunk) and the
    token-weighted `test_loss`, which must not count the repeats that pad the last batch of the second process, nor
    be mistaken for training under DeepSpeed (whose `engine.eval()` leaves the engine's own `training` flag True)."""
    from distill_worker import predict_run
    from safetensors.torch import load_file

    mode = "zero3-predict" if zero3 else "predict"
    torchrun(tmp_path, mode)
    rank0, rank1 = (load_file(tmp_path / f"{mode}-rank{r}.safetensors") for r in (0, 1))
    single = predict_run(tmp_path / "single")
    assert single["logits"].shape == (6, 16, 128)
    for key in single:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=key)
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-5, atol=1e-5, msg=key)
