"""DistillationArguments: TrainingArguments plus the distillation settings, with Minitron's defaults."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .losses import DISTILL_LOSSES, HIDDEN_STATE_LOSSES


def parse_layer_mapping(value: dict | str | None) -> dict[int, int] | None:
    """A `{student_layer: teacher_layer}` dict from a dict, a JSON object string or "s:t,s:t"."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        pairs = json.loads(text).items() if text.startswith("{") else (p.split(":") for p in text.split(","))
        value = {k: v for k, v in pairs}
    try:
        return {int(k): int(v) for k, v in dict(value).items()}
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"layer_mapping must map student layer indices to teacher layer indices, got {value!r}"
        ) from err


@dataclass
class DistillationArguments(TrainingArguments):
    """
    [`~transformers.TrainingArguments`] for [`DistillationTrainer`]; every `TrainingArguments` field works.

    Args:
        distill_loss (`str`, defaults to `"forward_kl"`):
            Divergence between teacher and student next-token distributions: `"forward_kl"` (KL(teacher || student),
            Minitron's choice), `"reverse_kl"` or `"jsd"`.
        distill_temperature (`float`, defaults to 1.0):
            Softmax temperature of both distributions; the loss is multiplied by its square.
        distill_weight (`float`, defaults to 1.0):
            Weight of the logit distillation loss.
        lm_weight (`float`, defaults to 0.0):
            Weight of the student's ordinary cross-entropy on `labels`.
        hidden_state_weight (`float` or `"auto"`, defaults to 0.0):
            Weight of the intermediate hidden-state loss; `"auto"` sets it every step to logit loss / hidden-state loss
            (Minitron's dynamic weight).
        hidden_state_loss (`str`, defaults to `"cosine"`):
            `"cosine"` or `"mse"`, on post-norm hidden states (each model's final norm applied to the layer output).
        layer_mapping (`dict[int, int]` or `str`, *optional*):
            Student layer -> teacher layer for the hidden-state loss (0-based decoder layer indices, negative ones count
            from the end; `"13:29,15:31"` or JSON also accepted). Default: the student's third-from-last layer, paired
            with the teacher layer whose output feeds the next surviving layer when the student was pruned from this
            teacher (`config.minitron["kept_layers"]`), else the teacher's third-from-last layer.
        distill_chunk_size (`int`, *optional*):
            Positions per chunk of the logit loss. Default: 2**25 // vocab_size (a 128 MiB float32 chunk), or an eighth
            of the batch's positions when that is smaller.
        distill_truncate_vocab (`bool`, defaults to `False`):
            Allow teacher and student vocabularies of different sizes by comparing only their first
            min(vocab sizes) tokens (for padded vocabularies). Otherwise a mismatch is an error.
        teacher_sharding (`str`, defaults to `"shard"`):
            Under FSDP2 or DeepSpeed ZeRO-3: `"shard"` shards the frozen teacher like the student (FSDP2 `fully_shard`
            per decoder layer / ZeRO-3 inference); `"replicate"` places it whole on each device (faster when it fits).
            Ignored otherwise.
        teacher_model_init_kwargs (`dict` or `str`, *optional*):
            Keyword arguments of `AutoModelForCausalLM.from_pretrained` when `teacher_model` is a Hub id or a path
            (as in TRL), e.g. `{"dtype": "bfloat16"}`; a JSON object string is accepted.
    """

    distill_loss: str = field(
        default="forward_kl",
        metadata={"help": f"Logit divergence, one of {DISTILL_LOSSES}.", "choices": DISTILL_LOSSES},
    )
    distill_temperature: float = field(default=1.0, metadata={"help": "Softmax temperature (> 0)."})
    distill_weight: float = field(default=1.0, metadata={"help": "Weight of the logit distillation loss."})
    lm_weight: float = field(default=0.0, metadata={"help": "Weight of the cross-entropy loss on labels."})
    hidden_state_weight: str = field(
        default="0.0",
        metadata={
            "help": "Weight of the intermediate hidden-state loss (a float, or 'auto' for L_logits / L_hidden)."
        },
    )
    hidden_state_loss: str = field(
        default="cosine",
        metadata={
            "help": f"Hidden-state loss, one of {HIDDEN_STATE_LOSSES}.",
            "choices": HIDDEN_STATE_LOSSES,
        },
    )
    layer_mapping: dict | str | None = field(
        default=None,
        metadata={"help": "Student layer -> teacher layer, e.g. '13:29' (default: Minitron's choice)."},
    )
    distill_chunk_size: int | None = field(
        default=None, metadata={"help": "Positions per chunk of the logit loss."}
    )
    distill_truncate_vocab: bool = field(
        default=False,
        metadata={"help": "Compare only the first min(vocab sizes) tokens when vocabularies differ."},
    )
    teacher_sharding: str = field(
        default="shard",
        metadata={
            "help": "Teacher under FSDP2 / ZeRO-3: shard or replicate.",
            "choices": ["shard", "replicate"],
        },
    )
    teacher_model_init_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": 'from_pretrained keyword arguments for a teacher given by name, e.g. \'{"dtype": "bfloat16"}\'.'
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.teacher_sharding not in ("shard", "replicate"):
            raise ValueError(
                f"teacher_sharding={self.teacher_sharding!r} is invalid: allowed 'shard' or 'replicate'."
            )
        if isinstance(self.teacher_model_init_kwargs, str):
            try:
                self.teacher_model_init_kwargs = json.loads(self.teacher_model_init_kwargs)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"teacher_model_init_kwargs must be a JSON object, got {self.teacher_model_init_kwargs!r}."
                ) from err
        if self.teacher_model_init_kwargs is not None and not isinstance(
            self.teacher_model_init_kwargs, dict
        ):
            raise ValueError(
                f"teacher_model_init_kwargs must be a dict, got {type(self.teacher_model_init_kwargs).__name__}."
            )
        if self.distill_loss not in DISTILL_LOSSES:
            raise ValueError(f"Unknown distill_loss {self.distill_loss!r}; choose one of {DISTILL_LOSSES}.")
        if self.hidden_state_loss not in HIDDEN_STATE_LOSSES:
            raise ValueError(
                f"Unknown hidden_state_loss {self.hidden_state_loss!r}; choose one of {HIDDEN_STATE_LOSSES}."
            )
        if not self.distill_temperature > 0:
            raise ValueError(f"distill_temperature must be positive, got {self.distill_temperature}.")
        if self.distill_chunk_size is not None and self.distill_chunk_size < 1:
            raise ValueError(f"distill_chunk_size must be a positive integer, got {self.distill_chunk_size}.")
        for name in ("distill_weight", "lm_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}.")
        if self.hidden_state_weight != "auto":
            try:
                self.hidden_state_weight = float(self.hidden_state_weight)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"hidden_state_weight must be a number or 'auto', got {self.hidden_state_weight!r}."
                ) from err
            if self.hidden_state_weight < 0:
                raise ValueError(f"hidden_state_weight must be non-negative, got {self.hidden_state_weight}.")
        self.layer_mapping = parse_layer_mapping(self.layer_mapping)

    @property
    def uses_hidden_states(self) -> bool:
        """Whether the intermediate hidden-state loss is on."""
        return self.hidden_state_weight == "auto" or self.hidden_state_weight > 0
