"""Shared helpers for the distillation tests, and the worker that tests/test_distill_distributed.py launches.

Run as `python -m torch.distributed.run --nproc_per_node 2 tests/distill_worker.py OUT_DIR`: each rank distills a few
steps on the CPU (gloo) and saves its student weights to OUT_DIR/rank<R>.pt.
"""

from __future__ import annotations

import os
import sys

import torch
from datasets import Dataset

sys.path.insert(0, os.path.dirname(__file__))
from tiny_models import tiny_model  # noqa: E402


def token_dataset(n: int = 8, seq_len: int = 16, seed: int = 0, ragged: bool = False) -> Dataset:
    """Blocks of random tokens with input_ids / attention_mask / labels; `ragged` pads and masks some rows."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 128, (n, seq_len), generator=g)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    if ragged:
        for row in range(n):
            pad = int(torch.randint(0, seq_len // 2, (1,), generator=g))
            if pad:
                ids[row, -pad:], mask[row, -pad:], labels[row, -pad:] = 0, 0, -100
            labels[row, : int(torch.randint(0, 4, (1,), generator=g))] = -100  # e.g. an unscored prompt
    return Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels.tolist()}
    )


def tiny_args(output_dir, **overrides):
    """DistillationArguments for fast CPU tests."""
    from hf_minitron import DistillationArguments

    defaults = dict(
        output_dir=str(output_dir),
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    return DistillationArguments(**{**defaults, **overrides})


def teacher_and_student(tied: bool = False, **student_overrides):
    teacher, student = tiny_model("llama", seed=1), tiny_model("llama", seed=2, **student_overrides)
    if tied:  # the student's lm_head is its input embedding (as in Qwen, Gemma, Llama 3.2)
        student.lm_head.weight = student.model.embed_tokens.weight
        student.config.tie_word_embeddings = True
    return teacher, student


# DeepSpeed ZeRO-3 with every parameter partitioned (tiny parameters would otherwise stay whole on every rank).
ZERO3 = {
    "zero_optimization": {
        "stage": 3,
        "stage3_param_persistence_threshold": 0,
        "stage3_gather_16bit_weights_on_model_save": True,
    },
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "train_batch_size": "auto",
    "gradient_clipping": "auto",
    "zero_allow_untested_optimizer": True,
}


def distill_run(output_dir, world_size=1, resume=None, tied=False, save_to=None, fsdp2=False, **overrides):
    """Distill a width-changed student (hidden 32 vs 64: a learned projection) on one global batch of 4 rows per step.

    Returns the student's and the projection's weights; the data order is sequential so that one process with
    batch 4 and two processes with batch 2 see the same global batches.
    """
    from hf_minitron import DistillationTrainer

    teacher, student = teacher_and_student(tied=tied, num_hidden_layers=2, hidden_size=32)
    if fsdp2:  # FSDP2 at load time (transformers' DistributedConfig): the path that needs no accelerate FSDP
        from transformers import AutoModelForCausalLM
        from transformers.distributed import DistributedConfig

        folder = os.path.join(output_dir, f"student-init-{os.environ.get('RANK', 0)}")
        student.save_pretrained(folder)
        student = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.float32, distributed_config=DistributedConfig(fsdp_size=world_size)
        )
    args = tiny_args(
        output_dir, ddp_backend="gloo" if world_size > 1 else None, lm_weight=0.5,
        per_device_train_batch_size=4 // world_size, train_sampling_strategy="sequential",
        **{"max_steps": 3, "hidden_state_weight": "auto", **overrides},
    )  # fmt: skip
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=token_dataset(16, ragged=True)
    )
    trainer.train(resume_from_checkpoint=resume)
    if save_to is not None:
        trainer.save_model(save_to)  # on every rank: a collective under ZeRO-3 / FSDP
    return trained_weights(trainer)


def offline_run(output_dir, world_size=1, **overrides):
    """Distill from stored teacher logits (top 16, built here into `output_dir/store`) on global batches of 4 rows."""
    from transformers import default_data_collator

    from hf_minitron import DistillationTrainer, TeacherLogitsDataset, compute_teacher_logits
    from hf_minitron.distillation import TeacherLogitsArguments

    teacher, student = teacher_and_student(num_hidden_layers=2)
    store = os.path.join(output_dir, "store")
    compute_teacher_logits(teacher, token_dataset(16, ragged=True), store, TeacherLogitsArguments(top_k=16),
                           progress=False)  # fmt: skip
    args = tiny_args(output_dir, ddp_backend="gloo" if world_size > 1 else None, lm_weight=0.5,
                     per_device_train_batch_size=4 // world_size, train_sampling_strategy="sequential", **overrides)  # fmt: skip
    trainer = DistillationTrainer(model=student, args=args, train_dataset=TeacherLogitsDataset(store),
                                  data_collator=default_data_collator)  # fmt: skip
    trainer.train()
    return trained_weights(trainer)


def predict_run(output_dir, world_size=1, **overrides) -> dict:
    """`predict(..., return_logits=True)` of an untrained width-changed student on 6 ragged rows in global batches of
    4 (gathered over the processes by the Trainer, in order; the last batch padded with repeats under torchrun): its
    logits, labels and token-weighted `test_loss`."""
    from hf_minitron import DistillationTrainer

    teacher, student = teacher_and_student(num_hidden_layers=2, hidden_size=32)
    args = tiny_args(output_dir, ddp_backend="gloo" if world_size > 1 else None, lm_weight=0.5,
                     per_device_eval_batch_size=4 // world_size, **{"hidden_state_weight": "auto", "distill_chunk_size": 7, **overrides})  # fmt: skip
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    output = trainer.predict(token_dataset(6, ragged=True), return_logits=True)
    return {
        "logits": torch.as_tensor(output.predictions),
        "labels": torch.as_tensor(output.label_ids),
        "loss": torch.tensor([output.metrics["test_loss"]]),
    }


def trained_weights(trainer) -> dict:
    """Full (gathered) student weights, the projection included (`distill_projection.*` and `projection.*`)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    zero3 = {}
    if any(hasattr(p, "device_mesh") for p in model.parameters()):  # how many parameters are FSDP2 shards
        teacher = trainer.accelerator.unwrap_model(trainer.teacher_model)
        for who, params in (("student", list(model.parameters())), ("teacher", list(teacher.parameters()))):
            zero3[f"fsdp2.{who}_sharded"] = torch.tensor(
                [sum(hasattr(p, "device_mesh") for p in params), len(params)]
            )
    if any(hasattr(p, "ds_id") for p in model.parameters()):  # how many parameters ZeRO-3 keeps partitioned
        groups = {"student": list(model.parameters())}
        if trainer.teacher_model is not None:  # None when training from stored teacher logits
            groups["teacher"] = list(trainer.accelerator.unwrap_model(trainer.teacher_model).parameters())
        for who, params in groups.items():
            partitioned = sum(hasattr(p, "ds_id") and p.numel() == 0 for p in params)
            zero3[f"zero3.{who}_partitioned"] = torch.tensor([partitioned, len(params)])
    with gathered_zero3(model.parameters()):
        weights = {
            k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
            for k, v in model.state_dict().items()
        }
    if trainer.projection is not None:
        with gathered_zero3(trainer.projection.parameters()):
            for k, v in trainer.projection.state_dict().items():
                weights[f"projection.{k}"] = (
                    (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
                )
    return {**weights, **zero3}


def gathered_zero3(params):
    """DeepSpeed ZeRO-3 parameters gathered (read-only) inside the block; a no-op for others."""
    import contextlib

    params = [p for p in params if hasattr(p, "ds_id")]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def fsdp2_loss_and_gradients(output_dir, wrap_head: bool = False) -> dict:
    """The trainer's loss and the student's (full) gradients on a global batch of 4 rows, split over the processes;
    under torchrun the student is sharded with FSDP2's `fully_shard` (layers and root, and the `lm_head` on its own
    when `wrap_head`) and the teacher with `shard_teacher_fsdp2`."""
    import torch.distributed as dist

    from hf_minitron import DistillationTrainer
    from hf_minitron.distillation.losses import target_mask

    teacher, student = teacher_and_student(num_hidden_layers=2, hidden_size=32)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if world > 1:
        from torch.distributed.fsdp import fully_shard

        from hf_minitron.distillation.placement import shard_teacher_fsdp2

        for layer in student.model.layers:
            fully_shard(layer)
        if wrap_head:
            fully_shard(student.lm_head)
        fully_shard(student)
        shard_teacher_fsdp2(teacher)  # what DistillationTrainer does to the teacher under FSDP2
        assert all(hasattr(p, "full_tensor") for p in teacher.parameters())
    data = {k: torch.tensor(v) for k, v in token_dataset(4, ragged=True)[:].items()}
    count = target_mask(data["attention_mask"], data["labels"], data["input_ids"]).sum()
    mine = {k: v[rank * 4 // world : (rank + 1) * 4 // world] for k, v in data.items()}
    args = tiny_args(output_dir, hidden_state_weight="auto", lm_weight=0.5, distill_chunk_size=7)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    student.train()
    loss = trainer.compute_loss(student, mine, num_items_in_batch=count)
    loss.backward()
    if world > 1:
        dist.all_reduce(total := loss.detach().clone())
        loss = total / world
    out = {"loss": loss.detach().reshape(1)}
    for name, p in student.named_parameters():
        grad = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
        out[f"grad.{name}"] = grad.detach().clone()
    assert "grad.distill_projection.weight" in out  # the learned projection, a submodule of the student
    sharded = sum(hasattr(p, "full_tensor") for p in student.parameters())
    out["sharded_parameters"] = torch.tensor([sharded, len(list(student.parameters()))])
    return out


def gloo_threads() -> list[str]:
    """Names of this process's gloo threads (Linux), which live as long as a gloo process group object does."""
    if not os.path.isdir("/proc/self/task"):
        return []
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                names.append(f.read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return sorted(n for n in names if "gloo" in n)


def main(out_dir: str, mode: str = "train") -> None:
    from safetensors.torch import save_file

    from hf_minitron.process_group import end_process_group, import_before_the_process_group

    import_before_the_process_group()  # else they keep the group alive into interpreter exit
    world = int(os.environ["WORLD_SIZE"])
    if mode == "train":
        weights = distill_run(out_dir, world_size=world)
    elif mode == "zero3":  # DeepSpeed ZeRO-3 student (and teacher), head untied then tied to the embedding
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        weights = distill_run(out_dir, world_size=world, deepspeed=ZERO3)
        unset_hf_deepspeed_config()  # else the next tiny model is built inside zero.Init (another random init)
        tied = distill_run(os.path.join(out_dir, "tied"), world_size=world, tied=True, deepspeed=ZERO3)
        weights.update({f"tied.{k}": v for k, v in tied.items()})
        unset_hf_deepspeed_config()
        rank_dir = os.path.join(out_dir, f"offline-{os.environ['RANK']}")
        weights.update({f"offline.{k}": v for k, v in offline_run(rank_dir, world, deepspeed=ZERO3).items()})
    elif mode in (
        "predict",
        "zero3-predict",
    ):  # predict(return_logits=True), under ZeRO-3 with the head partitioned
        weights = predict_run(
            out_dir, world_size=world, **({"deepspeed": ZERO3} if mode == "zero3-predict" else {})
        )
    elif mode == "fsdp2-train":  # the whole DistillationTrainer.train() with an FSDP2 student (and teacher)
        weights = distill_run(out_dir, world_size=world, fsdp2=True, save_to=os.path.join(out_dir, mode))
    elif mode in ("zero3-checkpoint", "zero3-resume"):
        resume = os.path.join(out_dir, "checkpoint-2") if mode == "zero3-resume" else None
        weights = distill_run(out_dir, world_size=world, resume=resume, max_steps=4, save_strategy="steps",
                              save_steps=2, deepspeed=ZERO3, save_to=os.path.join(out_dir, mode))  # fmt: skip
    elif mode in ("checkpoint", "resume"):  # 4 steps with a checkpoint at step 2, or resumed from it
        resume = os.path.join(out_dir, "checkpoint-2") if mode == "resume" else None
        weights = distill_run(out_dir, world_size=world, resume=resume, max_steps=4, save_strategy="steps",
                              save_steps=2)  # fmt: skip
    else:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        weights = fsdp2_loss_and_gradients(out_dir, wrap_head=mode == "fsdp2-head")
    save_file(
        {k: v.contiguous() for k, v in weights.items()},
        os.path.join(out_dir, f"{mode}-rank{os.environ['RANK']}.safetensors"),
    )
    end_process_group()
    # A gloo group alive at interpreter exit runs its threads into the teardown, where a worker was seen to abort. With
    # FSDP2 or ZeRO-3 the sharded models still hold it (device meshes, DeepSpeed's parameter attributes and engines).
    if mode in ("train", "checkpoint", "resume", "predict"):
        assert not gloo_threads(), f"the process group outlives end_process_group(): {gloo_threads()}"


if __name__ == "__main__":
    main(*sys.argv[1:])
