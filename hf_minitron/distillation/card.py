"""The run record of a DistillationTrainer, rendered by `hf_minitron.hub` into hf-minitron's model card."""

from __future__ import annotations

from typing import Any

from . import modeling as M

# Settings worth showing on the model card (the run record keeps them all).
CARD_SETTINGS = (
    "distill_loss", "distill_temperature", "distill_weight", "lm_weight", "hidden_state_weight", "learning_rate",
    "lr_scheduler_type", "warmup_steps", "max_steps", "num_train_epochs", "per_device_train_batch_size",
    "gradient_accumulation_steps",
)  # fmt: skip


def card_settings(args: Any) -> dict[str, Any]:
    """The `CARD_SETTINGS` of `DistillationArguments` that are set."""
    return {k: getattr(args, k) for k in CARD_SETTINGS if getattr(args, k, None) is not None}


def trainer_record(
    trainer: Any, model_name: str | None = None, dataset: Any = None, license: str | None = None
):
    """The `hf_minitron.json` record of a `DistillationTrainer` after training (architecture before / after,
    teacher, data, tokens seen, settings), for `hf_minitron.hub.write_model_card`."""
    from hf_minitron.hub import architecture_summary, recorded_command

    student = M.base_model(trainer.accelerator.unwrap_model(trainer.model))
    teacher = (
        None if trainer.teacher_model is None else trainer.accelerator.unwrap_model(trainer.teacher_model)
    )
    args = trainer.args
    settings = card_settings(args)
    store = trainer.train_dataset if trainer.teacher_model is None else None
    if store is not None:
        settings["teacher_top_k"] = store.top_k
    datasets = [dataset] if isinstance(dataset, str) else list(dataset or [])
    data = ", ".join(datasets) or (f"stored teacher logits ({store.path.name})" if store is not None else "-")
    record: dict[str, Any] = {
        "model_name": model_name or student.config._name_or_path.split("/")[-1] or "distilled-model",
        "base_model": trainer.teacher_name,
        "architecture": {"after": architecture_summary(student)},
        "distillation": {
            "teacher": trainer.teacher_name,
            "data": data,
            "tokens": int(
                trainer.state.global_step
                * args.per_device_train_batch_size
                * args.gradient_accumulation_steps
                * max(1, args.world_size)
                * trainer.seq_len_seen
            ),
            "settings": settings,
        },  # fmt: skip
        "commands": [recorded_command()],
    }
    if teacher is not None:
        record["architecture"]["before"] = architecture_summary(M.base_model(teacher))
    if datasets:
        record["datasets"] = datasets
    if license:
        record["license"] = license
    return record
