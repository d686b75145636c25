"""Starting and ending a `torchrun` process's process group so that nothing of it outlives the run.

A gloo process group runs threads (`pt_gloo_runloop`, `gloo_tcp_loop`) until the group object is freed. When it is
still referenced at interpreter exit they run on into the teardown, where a worker was seen to abort after finishing
its work ("terminate called without an active exception", exit code -6). Two references kept it alive after
`destroy_process_group()`:

- DeepSpeed, when installed, is imported by accelerate inside `Trainer` (`extract_model_from_parallel`); imported
  after the group exists, its `TorchBackend.barrier(group=GroupMember.WORLD)` binds the group as a default argument
  for good. Imported before, it binds None.
- DeepSpeed's own module globals (`deepspeed.utils.groups`) once it initialized its communication (ZeRO-3), which
  only `deepspeed.comm.destroy_process_group()` releases.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import sys


def under_torchrun() -> bool:
    """Whether this process is one of several started by `torchrun` / `accelerate launch`."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def import_deepspeed_first() -> None:
    """Import DeepSpeed, when installed, before the process group exists (accelerate imports it anyway)."""
    if "deepspeed" in sys.modules or importlib.util.find_spec("deepspeed") is None:
        return
    try:
        import deepspeed  # noqa: F401
    except Exception:  # a broken install fails later where it is used, with its own message
        pass


def end_process_group() -> None:
    """After a run that succeeded on every process: wait for all of them, then destroy every process group (through
    DeepSpeed when it initialized its communication, so it drops its references too) and collect what held them."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    ds_comm = sys.modules.get("deepspeed.comm.comm")
    if ds_comm is not None and getattr(ds_comm, "cdb", None) is not None and ds_comm.cdb.is_initialized():
        ds_comm.destroy_process_group()
    else:
        dist.destroy_process_group()
    gc.collect()  # e.g. a trainer in a reference cycle that still holds a wrapped model and its group
