"""DistillationTrainer: a `transformers.Trainer` that distills a (pruned) student from a frozen teacher."""

from __future__ import annotations

import math
import os
from collections import defaultdict

import torch
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from . import modeling as M
from .arguments import DistillationArguments
from .checkpoint import (
    load_projection,
    projection_detached,
    save_projection,
    write_training_args_json,
)
from .chunked import chunked_distillation_loss, chunked_topk_distillation_loss
from .hidden_states import auto_weight, hidden_state_setup, hidden_state_sum, student_layer_states
from .losses import target_mask
from .offline import TEACHER_KEYS, TeacherLogitsDataset
from .placement import (
    _attach_projection,
    _check_offline,
    _check_peft_student,
    _deepspeed_inference_engine,
    _no_training_args_pickle,
    _reshard,
    _wrap_peft,
    shard_teacher_fsdp2,
)
from .prediction import chunked_logits, eval_rows_kept
from .router import add_router_aux_loss

logger = logging.get_logger(__name__)


class DistillationTrainer(Trainer):
    """
    [`~transformers.Trainer`] that trains `model` (the student) to match the next-token distributions of
    `teacher_model`, as in Minitron; the logit loss is computed in chunks from final hidden states.

    Args:
        model (`PreTrainedModel` or `peft.PeftModel`):
            The student. With a PEFT model only the adapters are trained.
        teacher_model (`PreTrainedModel` or `str`, *optional*):
            The teacher, or its Hub id / local path (loaded with `args.teacher_model_init_kwargs`). It is frozen (no
            gradients, eval mode, not in the optimizer, never saved), placed on the student's device (never wrapped
            in DDP; prepared for inference under FSDP / DeepSpeed), may use a lower dtype, and must have the
            student's vocabulary (see `DistillationArguments.distill_truncate_vocab`). None to train from stored
            teacher logits: then `train_dataset` is a `TeacherLogitsDataset` (`hf-minitron teacher-logits`).
        args (`DistillationArguments`):
            Training and distillation settings.
        peft_config (`peft.PeftConfig`, *optional*):
            Wrap the student with this adapter config (as TRL's trainers do); only the adapters are trained.
        **kwargs:
            Everything else `transformers.Trainer` takes (`train_dataset`, `eval_dataset`, `data_collator`,
            `processing_class`, `callbacks`, `optimizers`, ...). Datasets hold `input_ids`, `attention_mask` and
            (optionally) `labels`; positions with label -100 or padding do not count.
    """

    _tag_names = ["hf-minitron", "minitron", "distillation"]
    # compute_loss divides by `num_items_in_batch`, which the trainer always computes (see _get_num_items_in_batch).
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: nn.Module | None = None,
        teacher_model: nn.Module | str | None = None,
        args: DistillationArguments | None = None,
        peft_config=None,
        **kwargs,
    ):
        if model is None:
            raise ValueError("DistillationTrainer needs `model`, the student to train.")
        if args is None:
            args = DistillationArguments(output_dir="tmp_trainer")
        if not isinstance(args, DistillationArguments):
            raise TypeError(f"args must be a DistillationArguments, got {type(args).__name__}.")
        if peft_config is not None:
            model = _wrap_peft(model, peft_config)
        _check_peft_student(model)
        if isinstance(teacher_model, (str, os.PathLike)):
            self.teacher_name = str(teacher_model)
            teacher_model = M.load_teacher(self.teacher_name, args.teacher_model_init_kwargs)
        elif teacher_model is not None:
            self.teacher_name = M.base_model(teacher_model).config._name_or_path or None
        else:
            self.teacher_name = None
        self.seq_len_seen = 0

        self.distill_vocab = None
        if teacher_model is None:  # offline: the teacher's top-k distributions come with the training data
            store = kwargs.get("train_dataset") or kwargs.get("eval_dataset")
            if not isinstance(store, TeacherLogitsDataset):
                raise ValueError(
                    "DistillationTrainer needs `teacher_model` (the model to distill from), or a train_dataset of "
                    "stored teacher logits (hf_minitron.TeacherLogitsDataset, written by `hf-minitron teacher-logits` "
                    "or hf_minitron.compute_teacher_logits)."
                )
            _check_offline(args, store, M.output_vocab(model))
            self.teacher_name = store.manifest.get("teacher")
            self.layer_pairs, self.teacher_channels, self.projection = [], None, None
            M.check_logit_head(model, "student")
        else:
            s_vocab, t_vocab = M.output_vocab(model), M.output_vocab(teacher_model)
            if s_vocab != t_vocab:
                if not args.distill_truncate_vocab:
                    raise ValueError(
                        f"Teacher and student vocab sizes differ: teacher vocab {t_vocab}, student vocab {s_vocab}. "
                        "Use a teacher with the student's tokenizer, or set distill_truncate_vocab=True to compare "
                        f"only the first {min(s_vocab, t_vocab)} tokens (for a padded vocabulary)."
                    )
                self.distill_vocab = min(s_vocab, t_vocab)
            self.layer_pairs, self.teacher_channels, self.projection = hidden_state_setup(
                model, teacher_model, args
            )
            M.check_logit_head(model, "student", self.distill_vocab)
            M.check_logit_head(teacher_model, "teacher", self.distill_vocab)
            # Only once every check has passed: a refusal leaves the teacher untouched.
            teacher_model.requires_grad_(False)
            teacher_model.eval()
        if self.projection is not None:
            _attach_projection(model, self.projection)
        super().__init__(model=model, args=args, **kwargs)
        if args.n_gpu > 1:
            raise ValueError(
                "DistillationTrainer does not support nn.DataParallel; launch with torchrun or accelerate."
            )
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)
        self.teacher_model = None if teacher_model is None else self._prepare_teacher(teacher_model)
        if self.projection is not None and kwargs.get("optimizers", (None, None))[0] is not None:
            logger.warning(
                "A custom optimizer was passed: add trainer.projection's parameters to it yourself."
            )
        self._totals = {"train": defaultdict(float), "eval": defaultdict(float)}

    # ---- setup -------------------------------------------------------------------------------------------------

    def _prepare_teacher(self, teacher: nn.Module) -> nn.Module:
        """Teacher placement: DeepSpeed inference engine; FSDP2-sharded (or whole on each device, by choice) under
        accelerate's FSDP2 or next to a student that transformers sharded at load time (`from_pretrained(...,
        distributed_config=DistributedConfig(fsdp_size=N))`); otherwise on the student's device. Never wrapped in
        DDP, never in the optimizer, never saved."""
        if self.is_deepspeed_enabled:
            return _deepspeed_inference_engine(teacher, self.accelerator, self.args.teacher_sharding)
        if self.is_fsdp_enabled:
            # accelerate's prepare_model(evaluation_mode=True) neither shards nor places a model under FSDP.
            if self.args.teacher_sharding == "shard" and getattr(self.accelerator, "is_fsdp2", False):
                return shard_teacher_fsdp2(teacher, self.accelerator)
            return teacher.to(self.args.device)
        if getattr(
            self, "is_distributed_loading_by_transformers", False
        ):  # an FSDP2 student sharded at load time
            already = any(hasattr(p, "device_mesh") for p in teacher.parameters())
            if self.args.teacher_sharding == "shard" and not already:
                mesh = next(p.device_mesh for p in self.model.parameters() if hasattr(p, "device_mesh"))
                return shard_teacher_fsdp2(teacher, mesh=mesh)
            return teacher if already else teacher.to(self.args.device)
        # Moves it to the student's device; DDP never wraps it (evaluation_mode).
        return self.accelerator.prepare_model(teacher, evaluation_mode=True)

    def _set_signature_columns_if_needed(self) -> None:
        """Keep the stored teacher distributions (offline) when Trainer drops columns the model does not take."""
        super()._set_signature_columns_if_needed()
        self._signature_columns += [k for k in TEACHER_KEYS if k not in self._signature_columns]

    # ---- loss --------------------------------------------------------------------------------------------------

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """Positions that count in the whole accumulated batch (summed over processes when averaging across them)."""
        if not batch_samples:
            return None
        count = sum(
            target_mask(b.get("attention_mask"), b.get("labels"), b["input_ids"]).sum() for b in batch_samples
        )
        count = count.to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        input_ids, labels = inputs["input_ids"], inputs.get("labels")
        student = self.accelerator.unwrap_model(model)
        training = student.training  # not the wrapper's flag: DeepSpeed's engine.eval() leaves its own True
        mask = target_mask(inputs.get("attention_mask"), labels, input_ids)
        if not training:  # the repeats that pad the last evaluation batch across processes do not count
            mask[eval_rows_kept(self.accelerator, mask.shape[0]) :] = False
        model_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
        no_logits = torch.empty(0, dtype=torch.long, device=input_ids.device)
        # Through the (DDP / FSDP / DeepSpeed / PEFT) wrapper, returning hidden states and no logits (logits_to_keep
        # selects none); the mapped layers' post-norm (projected) states are taken inside that forward.
        with student_layer_states(
            student, self.layer_pairs, self.projection, args.uses_hidden_states
        ) as s_states:
            outputs = model(
                **model_inputs, output_hidden_states=True, logits_to_keep=no_logits, use_cache=False
            )

        def select(states):  # [B, T, H] (or [B, T - 1, ...] for stored teacher values) -> [N, ...]
            return states[:, : mask.shape[1]][mask]

        y = labels[:, 1:][mask] if labels is not None else None
        weights = dict(
            distill_weight=args.distill_weight, lm_weight=args.lm_weight, chunk_size=args.distill_chunk_size
        )
        if self.teacher_model is None:
            stored = [inputs.get(k) for k in TEACHER_KEYS]
            if stored[0] is None and training:
                raise ValueError(
                    f"offline distillation: the training batch has no {TEACHER_KEYS[0]} (stored logits)."
                )
            if stored[0] is None:  # evaluation on plain blocks: the LM loss only (an empty top-k has zero KL)
                n = int(mask.sum())
                stored = [torch.zeros(n, 0), torch.zeros(n, 0, dtype=torch.long), torch.zeros(n)]
                stored = [t.to(input_ids.device) for t in stored]
            else:
                stored = [select(t) for t in stored]
            total, distill_sum, lm_sum = chunked_topk_distillation_loss(
                select(outputs.hidden_states[-1]),
                M.logit_head(student, trainable=True),
                *stored,
                y,
                **weights,
            )
            sums = {"distill_loss": distill_sum} if inputs.get(TEACHER_KEYS[0]) is not None else {}
        else:
            teacher = self.accelerator.unwrap_model(self.teacher_model)
            t_out = self._teacher_forward(teacher, model_inputs, no_logits)
            total, distill_sum, lm_sum = chunked_distillation_loss(
                select(outputs.hidden_states[-1]),
                M.logit_head(student, self.distill_vocab, trainable=True),
                select(t_out.last_hidden_state),
                M.logit_head(teacher, self.distill_vocab),
                y,
                loss=args.distill_loss,
                temperature=args.distill_temperature,
                **weights,
            )
            sums = {"distill_loss": distill_sum}
        if y is not None:
            sums["lm_loss"] = lm_sum
        if args.uses_hidden_states:
            pairs, channels = self.layer_pairs, self.teacher_channels
            hs_sum = hidden_state_sum(
                teacher, pairs, channels, args.hidden_state_loss, s_states, t_out.hidden_states, select
            )
            if args.hidden_state_weight == "auto":  # Minitron: L_logits / L_hidden, recomputed every step
                weight = auto_weight(total.detach(), hs_sum.detach(), args.world_size)
            else:
                weight = args.hidden_state_weight
            total = total + weight * hs_sum
            sums["hidden_state_loss"] = hs_sum.detach()
        total, aux_sum = add_router_aux_loss(total, outputs, M.base_model(student).config, mask.sum())
        if aux_sum is not None:  # the student's router load-balancing loss, when its config enables it
            sums["aux_loss"] = aux_sum

        if self.teacher_model is not None:
            _reshard(teacher)  # an FSDP2 teacher: free its root group's gathered weights until the next step
        count = mask.sum()
        mode = "train" if training else "eval"
        if mode == "train":
            self.seq_len_seen = input_ids.shape[1]
        if mode == "eval":  # the token-weighted eval_loss (Trainer would average per-batch means per sample)
            sums["loss"] = total.detach()
        for name, value in sums.items():
            self._totals[mode][name] += value.detach().double()
        self._totals[mode]["count"] += count.double()
        loss = total / (num_items_in_batch if num_items_in_batch is not None else count.clamp(min=1))
        if args.average_tokens_across_devices and args.world_size > 1 and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def _teacher_forward(self, teacher: nn.Module, model_inputs: dict, no_logits: torch.Tensor):
        """The teacher's decoder output (final hidden states, and all layers' when the hidden-state loss is on).

        The teacher runs through its top module (its FSDP / DeepSpeed wrapper included, so sharded weights are
        gathered as in any forward) without logits; a hook on the decoder keeps the decoder's output.
        """
        captured = {}
        decoder = M.decoder(teacher)
        handle = decoder.register_forward_hook(
            lambda module, args, output: captured.setdefault("out", output)
        )
        try:
            self.teacher_model(
                **model_inputs,
                output_hidden_states=bool(self.layer_pairs),
                logits_to_keep=no_logits,
                use_cache=False,
            )
        finally:
            handle.remove()
        return captured["out"]

    # ---- logging and evaluation --------------------------------------------------------------------------------

    def _pop_means(self, mode: str) -> dict[str, float]:
        """Token-weighted means of the loss components since the last call, over all processes."""
        totals = self._totals[mode]
        if not totals:
            return {}
        names = sorted(totals)
        values = torch.stack([torch.as_tensor(totals[n], dtype=torch.float64) for n in names]).to(
            self.args.device
        )
        if self.args.world_size > 1:
            values = self.accelerator.reduce(values, reduction="sum")
        totals.clear()
        values = dict(zip(names, values.tolist()))
        count = max(values.pop("count"), 1.0)
        return {name: value / count for name, value in values.items()}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update({k: round(v, 6) for k, v in self._pop_means("train").items()})
        super().log(logs, start_time)

    def predict(
        self,
        test_dataset,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "test",
        return_logits=False,
    ):
        """`Trainer.predict`; the student's logits `[B, T, V]` (float32) come back only with `return_logits=True`.

        They are built from the final hidden states chunk by chunk (the loss never needs them); set
        `eval_accumulation_steps` to move them off the device as they come.
        """
        self._return_logits = return_logits
        try:
            return super().predict(test_dataset, ignore_keys, metric_key_prefix)
        finally:
            self._return_logits = False

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
            if prediction_loss_only or not getattr(self, "_return_logits", False):
                return loss.detach(), None, None
            logits = chunked_logits(
                M.logit_head(self.accelerator.unwrap_model(model)), outputs.hidden_states[-1]
            )
        return loss.detach(), logits, inputs.get("labels")

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """Token-weighted `<prefix>_loss`, plus `<prefix>_distill_loss`, `_lm_loss`, `_perplexity` (exp of the LM loss)."""
        self._totals["eval"].clear()
        loss_only = not getattr(self, "_return_logits", False)
        output = super().evaluation_loop(dataloader, description, loss_only, ignore_keys, metric_key_prefix)
        means = self._pop_means("eval")
        if "loss" in means:
            output.metrics[f"{metric_key_prefix}_loss"] = means.pop("loss")
        if "lm_loss" in means:
            means["perplexity"] = math.exp(min(means["lm_loss"], 700.0))
        output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in means.items()})
        return output

    # ---- model card ---------------------------------------------------------------------------------------------

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """hf-minitron's model card (architecture before / after, teacher, distillation settings and tokens) and
        its run record `hf_minitron.json` in `output_dir`, instead of Trainer's generic card (`push_to_hub` uses
        it)."""
        if not self.is_world_process_zero():
            return
        from hf_minitron.hub import write_model_card

        from .card import trainer_record

        record = trainer_record(self, model_name, dataset or dataset_tags, license)
        write_model_card(self.args.output_dir, record, repo_id=getattr(self, "hub_model_id", None))

    # ---- saving: no pickles (Trainer writes training_args.bin, which holds hub_token) -----------------------------

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Trainer's save without `training_args.bin`; the arguments go to `training_args.json`, tokens masked and
        absolute paths cut to their last component."""
        student = self.accelerator.unwrap_model(self.model)
        loaded_sharded = self.projection is not None and getattr(
            self, "is_distributed_loading_by_transformers", False
        )
        with _no_training_args_pickle(), projection_detached(student, loaded_sharded):
            super()._save(output_dir, state_dict)
        if self.args.should_save:
            write_training_args_json(
                self.args, output_dir if output_dir is not None else self.args.output_dir
            )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        with _no_training_args_pickle():
            super()._push_from_checkpoint(checkpoint_folder)

    # ---- checkpoints: the projection is a submodule of the student that save_pretrained skips ---------------------

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.projection is None or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return  # DeepSpeed and FSDP checkpoint the whole module, projection included
        if self.args.should_save:
            step = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            save_projection(self.projection, os.path.join(self._get_output_dir(trial=trial), step))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.projection is not None:
            load_projection(self.projection, resume_from_checkpoint)
