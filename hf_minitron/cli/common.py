"""Shared pieces of the subcommands: recipes on the parser, model loading, run records."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from typing import Any, TextIO

from hf_minitron.cli.arguments import load_recipe

logger = logging.getLogger(__name__)


def add_config_flag(parser: argparse.ArgumentParser, sections: list[str]) -> None:
    """`--config RECIPE` on a subcommand that reads `sections` of the recipe."""
    parser.add_argument(
        "--config",
        default=None,
        metavar="RECIPE",
        help=f"YAML recipe (a file or a shipped recipe name); reads the sections {sections}; flags override it.",
    )
    parser.set_defaults(_sections=sections)


def apply_recipe(parser: argparse.ArgumentParser, recipe: str, sections: list[str] | None) -> dict[str, Any]:
    """Set the recipe's values (the sections this subcommand reads) as the parser's defaults."""
    values: dict[str, Any] = {}
    for section in load_recipe(recipe, sections).values():
        values.update(section)
    parser.set_defaults(**values)
    return values


def torch_dtype(name: str | None):
    """`"auto"`/None stay as they are; `"bfloat16"` -> `torch.bfloat16`."""
    import torch

    if name in (None, "auto"):
        return name
    value = getattr(torch, str(name), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"dtype={name!r} is invalid: allowed auto, float32, bfloat16, float16")
    return value


def load_model_and_tokenizer(name_or_path: str, model_args: Any, dtype: Any = None):
    """`AutoModelForCausalLM` and `AutoTokenizer` with the loading settings of `ModelArguments`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(trust_remote_code=model_args.trust_remote_code, revision=model_args.revision)
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path,
        dtype=torch_dtype(model_args.dtype) if dtype is None else dtype,
        device_map=model_args.device_map,
        **kwargs,
    )
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    return model.eval(), tokenizer


def cap_seq_len(seq_len: int, model: Any) -> int:
    """`seq_len` capped at the model's context length."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and seq_len > limit:
        logger.warning("seq_len %d is longer than the model's context (%d): using %d", seq_len, limit, limit)
        return int(limit)
    return seq_len


_result_streams: list[TextIO] = []


@contextlib.contextmanager
def stdout_for_the_result():
    """Inside, everything printed on stdout goes to stderr except `print_json`'s result, so that a command's stdout
    is exactly its JSON. Libraries print there: DeepSpeed's logger writes to the `sys.stdout` of its first import
    (a CPU machine's "Setting accelerator to CPU" warning, when transformers or accelerate import it), its CPU
    communication op prints "built successfully", and the Trainer prints its log dicts."""
    _result_streams.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _result_streams.pop()


def print_json(data: Any) -> None:
    """The command's result on stdout (the real one inside `stdout_for_the_result`)."""
    import json

    stream = _result_streams[-1] if _result_streams else sys.stdout
    print(json.dumps(data, indent=2, sort_keys=True, default=str), file=stream, flush=True)
