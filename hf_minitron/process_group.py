"""Starting and ending a `torchrun` process's process group so that nothing of it outlives the run.

A gloo process group runs threads (`pt_gloo_runloop`, `gloo_tcp_loop`) until the group object is freed. When it is
still referenced at interpreter exit they run on into the teardown, where a worker was seen to abort after finishing
its work ("terminate called without an active exception", exit code -6). These references kept it alive after
`destroy_process_group()`:

- Modules whose functions take `group=GroupMember.WORLD` as a default argument bind the live group for good when
  they are first imported after it exists, as happens in a run: DeepSpeed, when installed (imported by accelerate
  inside `Trainer`, `extract_model_from_parallel`: `TorchBackend.barrier`), and `torch.distributed.nn` (imported on
  the FSDP2 path). Imported before, they bind None.
- DeepSpeed's own module globals (`deepspeed.utils.groups`) once it initialized its communication (ZeRO-3), which
  only `deepspeed.comm.destroy_process_group()` releases.

What a sharded model references (FSDP2 device meshes and hooks, ZeRO-3 parameter attributes and engines) still keeps
the group until the model is freed.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import sys


def under_torchrun() -> bool:
    """Whether this process is one of several started by `torchrun` / `accelerate launch`."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def import_before_the_process_group() -> None:
    """Import the modules that bind the default group as a default argument (see above) before it exists:
    `torch.distributed.nn`, and DeepSpeed when installed (accelerate imports it in `Trainer` anyway)."""
    import torch.distributed.nn  # noqa: F401

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
