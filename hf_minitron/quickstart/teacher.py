"""The quickstart teacher: a byte-level BPE tokenizer and a small Llama trained on the built-in corpus, cached."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from hf_minitron.io import atomic_output_dir

__all__ = ["TeacherSettings", "default_cache_dir", "load_or_train_teacher", "train_tokenizer"]

logger = logging.getLogger(__name__)

EOS, PAD = "<|endoftext|>", "<|pad|>"


def default_cache_dir() -> Path:
    """`$HF_MINITRON_CACHE`, or `~/.cache/hf_minitron`."""
    return Path(os.environ.get("HF_MINITRON_CACHE") or Path.home() / ".cache" / "hf_minitron").expanduser()


def train_tokenizer(texts: list[str], vocab_size: int = 4096, model_max_length: int = 2048):
    """Train a byte-level BPE tokenizer with `tokenizers` and wrap it as a `PreTrainedTokenizerFast`.

    Its special tokens are `<|endoftext|>` (BOS and EOS) and `<|pad|>`; it saves with `save_pretrained`
    and loads with `AutoTokenizer.from_pretrained`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD, model_max_length=model_max_length
    )


@dataclass
class TeacherSettings:
    """Shape and training budget of the quickstart teacher (a Llama)."""

    vocab_size: int = 2048
    hidden_size: int = 192
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    seq_len: int = 128
    batch_size: int = 16
    steps: int = 600
    learning_rate: float = 4e-3
    seed: int = 0

    def model_config(self, tokenizer: Any):
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            max_position_embeddings=max(256, self.seq_len),
            tie_word_embeddings=False,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )


def cosine_lr(step: int, total: int, warmup: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up then cosine decay to `min_ratio` of the peak; a multiplier of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_lm(
    model, blocks: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int = 0, desc: str = "train"
):
    """Plain causal-LM training loop (AdamW, warm-up + cosine) over shuffled token blocks; returns losses."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, steps, max(1, steps // 20)))
    order, pos, losses = torch.randperm(len(blocks), generator=g), 0, []
    bar = tqdm(range(steps), desc=desc, unit="step")
    for _ in bar:
        if pos + batch_size > len(order):
            order, pos = torch.randperm(len(blocks), generator=g), 0
        batch = blocks[order[pos : pos + batch_size]]
        pos += batch_size
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def load_or_train_teacher(
    cache_dir: str | os.PathLike | None = None,
    train_texts: list[str] | None = None,
    settings: TeacherSettings | None = None,
    **kwargs: Any,
):
    """Load the cached quickstart teacher and tokenizer, or train and cache them.

    Args:
        cache_dir (`str`, *optional*): parent folder of the cache; defaults to `default_cache_dir()`. The
            teacher goes to `<cache_dir>/quickstart-teacher/<key>`, where the key hashes the settings and
            the corpus, so a changed setting trains a new teacher and a second run loads the first.
        train_texts (`list[str]`, *optional*): training documents; defaults to the built-in corpus.
        settings (`TeacherSettings`, *optional*): shape and budget; keyword arguments override its fields.

    Returns:
        `(model, tokenizer, info)`: a `LlamaForCausalLM` in eval mode, its `PreTrainedTokenizerFast`, and a
        dict with `cached` (bool), `train_seconds`, `final_train_loss`, `path`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_minitron.data import tokenize_and_pack
    from hf_minitron.quickstart.corpus import builtin_corpus, corpus_fingerprint

    settings = settings or TeacherSettings()
    if kwargs:
        settings = TeacherSettings(**{**asdict(settings), **kwargs})
    if train_texts is None:
        train_texts, _ = builtin_corpus()
    key_src = json.dumps({"settings": asdict(settings), "corpus": corpus_fingerprint(train_texts), "v": 1})
    key = hashlib.sha256(key_src.encode()).hexdigest()[:12]
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = path / "quickstart-teacher" / key
    info_file = path / "teacher_info.json"
    if info_file.is_file():
        logger.info("loading the cached teacher from %s", path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        return model, tokenizer, {**json.loads(info_file.read_text()), "cached": True, "path": str(path)}

    start = time.perf_counter()
    tokenizer = train_tokenizer(train_texts, settings.vocab_size)
    torch.manual_seed(settings.seed)
    model = AutoModelForCausalLM.from_config(settings.model_config(tokenizer), dtype=torch.float32)
    blocks = tokenize_and_pack(train_texts, tokenizer, settings.seq_len)
    losses = train_lm(
        model, blocks, settings.steps, settings.batch_size, settings.learning_rate, settings.seed, "teacher"
    )
    info = {
        "settings": asdict(settings),
        "train_seconds": round(time.perf_counter() - start, 1),
        "train_tokens": settings.steps * settings.batch_size * settings.seq_len,
        "corpus_tokens": int(blocks.numel()),
        "final_train_loss": sum(losses[-10:]) / len(losses[-10:]),
        "train_losses": [round(x, 4) for x in losses],
    }
    with atomic_output_dir(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "teacher_info.json").write_text(json.dumps(info, indent=2))
    return model, tokenizer, {**info, "cached": False, "path": str(path)}
