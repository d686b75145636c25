"""DistillationTrainer: a `transformers.Trainer` that distills a (pruned) student from a frozen teacher."""

from __future__ import annotations

import contextlib
import math
import os
from collections import defaultdict

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from hf_minitron.io import atomic_file, atomic_write_text

from . import modeling as M
from .arguments import DistillationArguments
from .chunked import DEFAULT_CHUNK_ELEMENTS, chunked_distillation_loss, chunked_topk_distillation_loss
from .losses import hidden_state_loss, target_mask
from .offline import TEACHER_KEYS, TeacherLogitsDataset
from .placement import (
    PROJECTION_MODULE,
    _attach_projection,
    _check_offline,
    _check_peft_student,
    _deepspeed_inference_engine,
    _no_training_args_pickle,
    _reshard,
    _wrap_peft,
    shard_teacher_fsdp2,
)
from .router import add_router_aux_loss

logger = logging.get_logger(__name__)

PROJECTION_NAME = "distill_projection.safetensors"
TRAINING_ARGS_JSON = "training_args.json"


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
            self.layer_pairs, self.teacher_channels, self.projection = self._hidden_state_setup(
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

    @staticmethod
    def _hidden_state_setup(student, teacher, args):
        """Layer pairs, teacher channels to keep, and the learned projection for the hidden-state loss."""
        if not args.uses_hidden_states and args.layer_mapping is None:
            return [], None, None
        s_layers, t_layers = M.num_layers(student), M.num_layers(teacher)
        record = getattr(M.base_model(student).config, "minitron", None) or {}
        from_this_teacher = record.get("source_num_hidden_layers") == t_layers
        kept_layers = record.get("kept_layers") if from_this_teacher else None
        mapping = args.layer_mapping or M.default_layer_mapping(s_layers, t_layers, kept_layers)
        pairs = M.resolve_layer_pairs(mapping, s_layers, t_layers)
        if not args.uses_hidden_states:
            logger.warning("layer_mapping is set but hidden_state_weight is 0: the hidden-state loss is off.")
            return pairs, None, None
        s_hidden, t_hidden = M.hidden_size(student), M.hidden_size(teacher)
        if s_hidden == t_hidden:
            return pairs, None, None
        kept = record.get("kept_hidden_channels")
        if kept is not None and len(kept) == s_hidden and record.get("source_hidden_size") == t_hidden:
            return pairs, torch.tensor(kept, dtype=torch.long), None
        dtype = next(M.base_model(student).parameters()).dtype
        return pairs, None, nn.Linear(s_hidden, t_hidden, bias=False, dtype=dtype)

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
            mask[self._eval_rows_kept(mask.shape[0]) :] = False
        model_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
        no_logits = torch.empty(0, dtype=torch.long, device=input_ids.device)
        # Through the (DDP / FSDP / DeepSpeed / PEFT) wrapper, returning hidden states and no logits (logits_to_keep
        # selects none); the mapped layers' post-norm (projected) states are taken inside that forward.
        with self._student_layer_states(student) as s_states:
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
            hs_sum = self._hidden_state_sum(teacher, s_states, t_out.hidden_states, select)
            if args.hidden_state_weight == "auto":  # Minitron: L_logits / L_hidden, recomputed every step
                weight = self._auto_weight(total.detach(), hs_sum.detach())
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

    def _eval_rows_kept(self, batch_size: int) -> int:
        """How many leading rows of this process's evaluation batch are data: accelerate completes the last global
        batch with repeats of the first samples so every process gets a full batch (`gather_for_metrics` keeps the
        first `remainder` rows of that batch in process order); counting them would weight those samples twice."""
        state, processes = self.accelerator.gradient_state, self.accelerator.num_processes
        if processes == 1 or not state.end_of_dataloader or state.remainder <= 0:
            return batch_size
        return max(0, min(batch_size, state.remainder - self.accelerator.process_index * batch_size))

    def _auto_weight(self, logit_sum: torch.Tensor, hs_sum: torch.Tensor) -> torch.Tensor:
        """L_logits / L_hidden over the global batch: the same ratio on every process as in one process."""
        sums = torch.stack([logit_sum.float(), hs_sum.float()])
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        return sums[0] / sums[1] if sums[1] > 0 else sums.new_zeros(())

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

    @contextlib.contextmanager
    def _student_layer_states(self, student: nn.Module):
        """Collect `{layer: projection(final_norm(layer output))}` for the mapped student layers during forward.

        Forward hooks, so that the final norm and the learned projection (a submodule of the student) run inside the
        wrapped forward, where DDP, FSDP and DeepSpeed expect parameters to be used.
        """
        states: dict[int, torch.Tensor] = {}
        if not (self.args.uses_hidden_states and self.layer_pairs):
            yield states
            return
        norm, layers = M.final_norm(student), M.decoder_layers(student)

        def hook(layer: int):
            def collect(module, args, output):
                out = norm(output[0] if isinstance(output, tuple) else output)
                if self.projection is not None:
                    out = self.projection(out.to(self.projection.weight.dtype))
                states[layer] = out

            return collect

        def expose(module, args, output):
            # DDP with find_unused_parameters marks every parameter the forward's outputs do not reach as unused (and
            # then fails when its gradient arrives): return the states in the free `attentions` slot (a field, so
            # that DDP can rebuild the output type).
            if output.get("attentions") is None:
                output["attentions"] = tuple(states[k] for k in sorted(states))
            return output

        handles = [layers[s].register_forward_hook(hook(s)) for s in sorted({s for s, _ in self.layer_pairs})]
        handles.append(student.register_forward_hook(expose))
        try:
            yield states
        finally:
            for handle in handles:
                handle.remove()

    def _hidden_state_sum(self, teacher, s_states, t_states, select) -> torch.Tensor:
        """Hidden-state loss summed over positions, averaged over the layer pairs."""
        t_norm, t_depth = M.final_norm(teacher), M.num_layers(teacher)
        total = 0.0
        for s_layer, t_layer in self.layer_pairs:
            s = select(s_states[s_layer])
            with torch.no_grad():
                t = select(M.layer_states(t_states, t_layer, t_depth, t_norm))
            if self.teacher_channels is not None:
                t = t[:, self.teacher_channels.to(t.device)]
            total = total + hidden_state_loss(self.args.hidden_state_loss, s, t).sum()
        return total / len(self.layer_pairs)

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
            hidden = outputs.hidden_states[-1]
            head = M.logit_head(self.accelerator.unwrap_model(model))
            flat = hidden.reshape(-1, hidden.shape[-1])
            with head.gathered():  # a ZeRO-3-partitioned head: whole while the logits are built
                chunk = max(1, DEFAULT_CHUNK_ELEMENTS // head.weight.shape[0])
                logits = torch.cat([head.logits(flat[i : i + chunk]) for i in range(0, flat.shape[0], chunk)])
        return loss.detach(), logits.view(*hidden.shape[:-1], -1), inputs.get("labels")

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
        with _no_training_args_pickle(), self._projection_detached():
            super()._save(output_dir, state_dict)
        if self.args.should_save:
            folder = output_dir if output_dir is not None else self.args.output_dir
            from hf_minitron.hub import (
                public_text,
            )  # tokens masked, machine paths cut: the folder is uploaded

            atomic_write_text(
                os.path.join(folder, TRAINING_ARGS_JSON), public_text(self.args.to_json_string())
            )

    @contextlib.contextmanager
    def _projection_detached(self):
        """Without the projection while a student sharded at load time is saved: transformers' (5.24) distributed
        save wrote it into the checkpoint despite `_keys_to_ignore_on_save`."""
        base = M.base_model(self.accelerator.unwrap_model(self.model))
        if self.projection is None or not getattr(self, "is_distributed_loading_by_transformers", False):
            yield
            return
        module = base._modules.pop(PROJECTION_MODULE)
        try:
            yield
        finally:
            base._modules[PROJECTION_MODULE] = module

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        with _no_training_args_pickle():
            super()._push_from_checkpoint(checkpoint_folder)

    # ---- checkpoints: the projection is a submodule of the student that save_pretrained skips ---------------------

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.projection is None or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return  # DeepSpeed and FSDP checkpoint the whole module, projection included
        if self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            state = {k: v.detach().cpu().contiguous() for k, v in self.projection.state_dict().items()}
            with atomic_file(os.path.join(folder, PROJECTION_NAME)) as tmp:
                save_file(state, tmp)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, PROJECTION_NAME)
        if self.projection is not None and os.path.isfile(path):
            self.projection.load_state_dict(load_file(path))  # copied onto the projection's device
