"""Checks and placement around DistillationTrainer: refusals, PEFT wrapping, the projection, teacher sharding."""

from __future__ import annotations

import contextlib
import os

from torch import nn

from . import modeling as M
from .arguments import DistillationArguments
from .offline import TeacherLogitsDataset

PROJECTION_MODULE = "distill_projection"


def _attach_projection(model: nn.Module, projection: nn.Module) -> None:
    """Make the learned projection a submodule of the student, so that DDP, FSDP, DeepSpeed (ZeRO-3 included) and
    the optimizer treat it like the student's own weights, and tell `save_pretrained` to leave it out."""
    base = M.base_model(model)
    mesh = next((p.device_mesh for p in model.parameters() if hasattr(p, "device_mesh")), None)
    if mesh is not None:  # a student already sharded with FSDP2: shard the projection as its own unit
        from torch.distributed.fsdp import fully_shard

        fully_shard(projection, mesh=mesh)
    base.add_module(PROJECTION_MODULE, projection)
    keys = {f"{PROJECTION_MODULE}.{name}" for name, _ in projection.named_parameters()}
    base._keys_to_ignore_on_save = set(base._keys_to_ignore_on_save or ()) | keys


def _check_offline(args: DistillationArguments, store: TeacherLogitsDataset, student_vocab: int) -> None:
    """Stored top-k log-probs give the forward KL at temperature 1 only, and no teacher hidden states."""
    if args.distill_loss != "forward_kl":
        raise ValueError(
            f"distill_loss={args.distill_loss!r} needs the teacher's full distribution: with stored teacher logits "
            "(offline) only 'forward_kl' is allowed; pass teacher_model to use it."
        )
    if args.distill_temperature != 1.0:
        raise ValueError(
            f"distill_temperature={args.distill_temperature} is not allowed with stored teacher logits: allowed 1.0 "
            "(top-k log-probs were stored at temperature 1)."
        )
    if args.uses_hidden_states:
        raise ValueError(
            f"hidden_state_weight={args.hidden_state_weight!r} needs the teacher's hidden states, which stored teacher "
            "logits do not have: set hidden_state_weight=0 or pass teacher_model."
        )
    if store.vocab_size != student_vocab:
        raise ValueError(
            f"The stored teacher logits in {store.path} cover vocab {store.vocab_size}, the student's vocab is "
            f"{student_vocab}: they must be equal."
        )


def _reshard(model: nn.Module) -> None:
    """Reshard an FSDP2 module (its root group stays gathered after a forward without backward)."""
    if hasattr(model, "reshard") and hasattr(model, "unshard"):
        model.reshard()


def _wrap_peft(model: nn.Module, peft_config) -> nn.Module:
    """The student with a new PEFT adapter (TRL's `peft_config=`)."""
    from peft import PeftModel, get_peft_model

    if isinstance(model, PeftModel):
        raise ValueError("model is already a PeftModel: pass either a PeftModel or peft_config, not both.")
    if getattr(peft_config, "is_prompt_learning", False):
        raise ValueError("Prompt-learning PEFT students are not supported; use an adapter such as LoRA.")
    targets = getattr(peft_config, "target_modules", None) or ()
    head = M.base_model(model).get_output_embeddings()
    head_name = next((n for n, m in model.named_modules() if m is head), "lm_head")
    if (isinstance(targets, str) and targets == head_name.split(".")[-1]) or (
        not isinstance(targets, str) and head_name.split(".")[-1] in set(targets)
    ):
        raise ValueError(
            f"peft_config.target_modules includes {head_name!r}: an adapter on lm_head is not supported (the loss "
            "reads lm_head.weight); drop it from target_modules."
        )
    return get_peft_model(model, peft_config)  # after the checks: get_peft_model changes `model` in place


def _check_peft_student(model: nn.Module) -> None:
    """The loss bypasses PeftModel.forward's prompt handling and reads lm_head.weight directly."""
    try:
        from peft import PeftModel
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return
    if not isinstance(model, PeftModel):
        return
    if model.peft_config[model.active_adapter].is_prompt_learning:
        raise ValueError("Prompt-learning PEFT students are not supported; use an adapter such as LoRA.")
    if isinstance(model.get_base_model().get_output_embeddings(), BaseTunerLayer):
        raise ValueError(
            "An adapter on lm_head is not supported (the loss reads lm_head.weight); drop it from target_modules."
        )


@contextlib.contextmanager
def _no_training_args_pickle():
    """Trainer `torch.save`s its arguments to `os.path.join(folder, TRAINING_ARGS_NAME)`: send them to the null device.

    An absolute name makes `os.path.join` drop the folder, so no pickle (which would hold `hub_token`) is written into
    any output or checkpoint folder, nor uploaded from one.
    """
    import transformers.trainer as hf_trainer

    name = hf_trainer.TRAINING_ARGS_NAME
    hf_trainer.TRAINING_ARGS_NAME = os.devnull
    try:
        yield
    finally:
        hf_trainer.TRAINING_ARGS_NAME = name


def shard_teacher_fsdp2(teacher: nn.Module, accelerator=None, mesh=None) -> nn.Module:
    """Shard a frozen teacher with FSDP2 `fully_shard` (each decoder layer, then the whole model) for inference.

    Uses `mesh`, else the accelerator's device mesh when it has one; the teacher keeps `requires_grad=False` and is never given to
    the optimizer. Its layers are resharded after their forward, so only one layer is gathered at a time.
    """
    from torch.distributed.fsdp import fully_shard

    if mesh is None and accelerator is not None:
        mesh = getattr(accelerator, "torch_device_mesh", None)
    if mesh is not None and accelerator is not None and accelerator.parallelism_config is not None:
        mesh = mesh[tuple(accelerator.parallelism_config.fsdp_dim_names)]
    layer_classes = set(getattr(M.base_model(teacher), "_no_split_modules", None) or [])
    for module in teacher.modules():
        if type(module).__name__ in layer_classes:
            fully_shard(module, mesh=mesh)
    fully_shard(teacher, mesh=mesh)
    return teacher


def _deepspeed_inference_engine(teacher: nn.Module, accelerator, sharding: str = "shard"):
    """The teacher as a DeepSpeed inference engine: ZeRO-3-partitioned when the student runs under ZeRO-3 and
    `sharding="shard"`, else without ZeRO sharding (stage 0: whole on each device)."""
    import copy

    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    # Batch sizes do not matter to an inference engine, but DeepSpeed checks train = micro * accumulation * world.
    micro = config.get("train_micro_batch_size_per_gpu")
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        config.pop(key, None)
    config["train_micro_batch_size_per_gpu"] = micro if isinstance(micro, int) else 1
    config["gradient_accumulation_steps"] = 1
    config["zero_optimization"].pop("offload_optimizer", None)
    zero3 = config["zero_optimization"].get("stage") == 3 and sharding == "shard"
    config["zero_optimization"]["stage"] = 3 if zero3 else 0
    engine, *_ = deepspeed.initialize(model=teacher, config=config)
    engine.eval()
    return engine
