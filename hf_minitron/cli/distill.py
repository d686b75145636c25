"""`hf-minitron distill --student DIR --teacher MODEL --data TEXT --output DIR`: knowledge distillation."""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from hf_minitron.cli.arguments import DataArguments, ModelArguments, dataclass_from_namespace
from hf_minitron.cli.common import add_config_flag

logger = logging.getLogger(__name__)

SECTIONS = ["model", "data", "distillation"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    from hf_minitron.distillation import DistillationArguments

    parser = subparsers.add_parser(
        "distill",
        dataclass_types=[ModelArguments, DataArguments, DistillationArguments],
        help="Retrain a pruned student by knowledge distillation from its teacher.",
        description="Pack --data into blocks of --seq_len tokens and train the student with DistillationTrainer "
        "(every DistillationArguments / TrainingArguments field is a flag). The student, its tokenizer and an "
        "updated model card are written to --output atomically; Trainer checkpoints go to --output_dir (default "
        "<output>-checkpoints, kept after a failure so --resume_from_checkpoint works, removed after success "
        "when it holds no checkpoint).",
    )
    parser.add_argument("--student", required=True, help="Folder of the pruned student (output of `prune`).")
    parser.add_argument("--teacher", dest="model_name_or_path", default=argparse.SUPPRESS, metavar="MODEL",
                        help="Teacher: Hub id or folder (default: model: of the recipe); loaded with --dtype.")  # fmt: skip
    parser.add_argument("--output", "-o", required=True, help="Output folder of the distilled student.")
    parser.add_argument("--teacher_logits", default=None, metavar="DIR",
                        help="Train from stored teacher top-k log-probs (`hf-minitron teacher-logits`) instead of "
                        "running a teacher: --teacher and --data are then not needed.")  # fmt: skip
    add_config_flag(parser, SECTIONS)
    return parser


def _tokens_seen(trainer, seq_len: int) -> int:
    args = trainer.args
    return int(
        trainer.state.global_step
        * args.per_device_train_batch_size
        * args.gradient_accumulation_steps
        * max(1, args.world_size)
        * seq_len
    )


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, default_data_collator

    from hf_minitron.cli.common import cap_seq_len, load_model_and_tokenizer, print_json
    from hf_minitron.data import load_texts, pack_texts
    from hf_minitron.distillation import DistillationArguments, DistillationTrainer, TeacherLogitsDataset
    from hf_minitron.distillation.card import card_settings
    from hf_minitron.hub import (
        RECORD_NAME,
        architecture_summary,
        load_record,
        recorded_command,
        write_model_card,
    )

    model_args = dataclass_from_namespace(ModelArguments, args)
    data_args = dataclass_from_namespace(DataArguments, args)
    store = TeacherLogitsDataset(args.teacher_logits) if args.teacher_logits else None
    if store is None and not model_args.model_name_or_path:
        raise ValueError(
            "the teacher is required: --teacher MODEL (or model: in the recipe), or --teacher_logits DIR"
        )
    if store is None and not data_args.data:
        raise ValueError("training text is required: --data PATH_OR_DATASET (or --teacher_logits DIR)")
    output = Path(args.output).expanduser().absolute()
    checkpoints = getattr(args, "output_dir", None) or str(output.parent / f"{output.name}-checkpoints")
    dist_args = dataclass_from_namespace(DistillationArguments, args, output_dir=checkpoints)
    start = time.perf_counter()
    # The process group first: under ZeRO-3 (--deepspeed) from_pretrained loads into zero.Init, which reads DeepSpeed's
    # world size (1 on CPU otherwise, where accelerate sets up a gloo group without DeepSpeed's communicator).
    _ = dist_args.device
    if dist_args.deepspeed and dist_args.world_size > 1:
        import deepspeed

        deepspeed.init_distributed()  # wraps the existing process group

    student = AutoModelForCausalLM.from_pretrained(args.student, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.student)
    if store is not None:  # offline: no teacher is loaded; the blocks come with its stored distributions
        teacher, train_dataset, seq_len = None, store, int(store.manifest["seq_len"])
        teacher_name, data_name = store.manifest["teacher"], str(args.teacher_logits)
    else:
        teacher, _ = load_model_and_tokenizer(model_args.model_name_or_path, model_args)
        seq_len = cap_seq_len(data_args.seq_len, student)
        texts = load_texts(data_args.data, data_args.data_split, data_args.text_column, data_args.dataset_config,
                           data_args.max_texts)  # fmt: skip
        train_dataset = pack_texts(texts, tokenizer, seq_len)
        teacher_name, data_name = model_args.model_name_or_path, data_args.data
    eval_dataset = None
    if data_args.eval_data:
        eval_texts = load_texts(data_args.eval_data, data_args.eval_split, data_args.text_column,
                                data_args.dataset_config)  # fmt: skip
        eval_dataset = pack_texts(eval_texts, tokenizer, seq_len)

    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=dist_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=default_data_collator,
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=dist_args.resume_from_checkpoint)
    tokens = _tokens_seen(trainer, seq_len)
    evaluations = []
    metrics = trainer.evaluate() if eval_dataset is not None else {}
    for key in ("eval_perplexity", "eval_lm_perplexity"):
        if key in metrics:
            split = None if Path(data_args.eval_data).exists() else data_args.eval_split
            evaluations.append({"dataset": data_args.eval_data, "split": split,
                                "metric": "perplexity", "value": float(metrics[key])})  # fmt: skip
            break

    record = load_record(args.student) or {
        "model_name": output.name,
        "base_model": teacher_name,
        "architecture": {"before": architecture_summary(teacher)} if teacher is not None else {},
        "commands": [],
    }
    record["model_name"] = output.name
    record.setdefault("architecture", {})["after"] = architecture_summary(student)
    record["distillation"] = {
        "teacher": teacher_name,
        "data": data_name,
        "tokens": tokens,
        "seq_len": seq_len,
        "settings": card_settings(dist_args) | ({"teacher_top_k": store.top_k} if store is not None else {}),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    }
    if store is None and not Path(data_args.data).exists():
        record["datasets"] = sorted(set(record.get("datasets", [])) | {data_args.data})
    record["evaluations"] = evaluations  # results of the model before distillation no longer describe it
    record["commands"] = [*record.get("commands", []), recorded_command(args._command_line)]

    def write_rest(tmp: Path) -> None:
        tokenizer.save_pretrained(tmp)
        for name in ("pruning_config.json",):
            if (Path(args.student) / name).is_file():
                shutil.copy2(Path(args.student) / name, tmp / name)
        (tmp / RECORD_NAME).unlink(missing_ok=True)
        write_model_card(tmp, record)

    save_on_every_rank(trainer, output, write_rest)
    if trainer.is_world_process_zero():
        ckpt = Path(checkpoints)
        if ckpt.is_dir() and not any(p.name.startswith("checkpoint-") for p in ckpt.iterdir()):
            shutil.rmtree(ckpt, ignore_errors=True)
        print_json({"output": str(output), "tokens": tokens, "metrics": record["distillation"]["metrics"],
                    "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
    return 0  # `hf-minitron` then ends the process group (hf_minitron.process_group.end_process_group)


def save_on_every_rank(trainer, output: Path, write_rest) -> None:
    """`trainer.save_model` on every process (a collective under FSDP / ZeRO-3) into rank 0's atomic output folder."""
    import contextlib

    import torch

    from hf_minitron.io import atomic_output_dir

    main = trainer.is_world_process_zero()
    with atomic_output_dir(output) if main else contextlib.nullcontext() as tmp:
        names = [str(tmp) if main else None]
        if trainer.args.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.broadcast_object_list(names, src=0)
        trainer.save_model(names[0])
        if main:
            write_rest(Path(names[0]))
        trainer.accelerator.wait_for_everyone()
