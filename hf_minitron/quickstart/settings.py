"""Settings of the quickstart (the `quickstart:` section of `recipes/quickstart.yaml`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = ["QuickstartArguments"]


@dataclass
class QuickstartArguments:
    """Corpus, teacher and budgets of `hf-minitron quickstart`; pruning targets and distillation settings come
    from the `pruning:` and `distillation:` sections of the recipe."""

    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Teacher cache (default: $HF_MINITRON_CACHE or ~/.cache/hf_minitron)."},
    )
    max_chars: int | None = field(default=None, metadata={"help": "Use only this many corpus characters."})
    vocab_size: int = field(default=2048, metadata={"help": "Byte-level BPE vocabulary size."})
    teacher_hidden_size: int = field(default=192, metadata={"help": "Teacher hidden size."})
    teacher_intermediate_size: int = field(default=512, metadata={"help": "Teacher MLP size."})
    teacher_num_hidden_layers: int = field(default=4, metadata={"help": "Teacher layers."})
    teacher_num_attention_heads: int = field(default=4, metadata={"help": "Teacher query heads."})
    teacher_num_key_value_heads: int = field(default=2, metadata={"help": "Teacher KV heads."})
    teacher_steps: int = field(default=600, metadata={"help": "Teacher training steps."})
    teacher_learning_rate: float = field(default=4e-3, metadata={"help": "Teacher peak learning rate."})
    seq_len: int = field(default=128, metadata={"help": "Tokens per block."})
    batch_size: int = field(
        default=16, metadata={"help": "Blocks per training step (teacher, student, scratch)."}
    )
    calibration_samples: int = field(default=256, metadata={"help": "Calibration blocks for importance."})
    distill_tokens: int = field(
        default=327680, metadata={"help": "Token budget of distillation and of scratch."}
    )
    scratch_learning_rate: float = field(
        default=2e-3,
        metadata={"help": "Peak learning rate of the from-scratch baseline (the better of 2e-3 and 4e-3)."},
    )
    eval_points: int = field(default=8, metadata={"help": "Held-out loss measurements along each curve."})
    eval_blocks: int = field(default=64, metadata={"help": "Held-out blocks per curve measurement."})
    seed: int = field(default=0, metadata={"help": "Random seed (teacher init, data order)."})

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("cache_dir", "max_chars", "seed") or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{f.name}={value!r} is invalid: allowed a positive number")
        if self.seq_len < 2:
            raise ValueError(f"seq_len={self.seq_len} is invalid: allowed 2 or more")
        if self.teacher_hidden_size % self.teacher_num_attention_heads:
            raise ValueError(
                f"teacher_hidden_size={self.teacher_hidden_size} is invalid: allowed a multiple of "
                f"teacher_num_attention_heads={self.teacher_num_attention_heads}"
            )
