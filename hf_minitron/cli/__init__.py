"""`hf-minitron`: prune, distill, evaluate and publish smaller models from the command line.

Each subcommand lives in `hf_minitron/cli/<name>.py` with `add_parser(subparsers)` and `run(args) -> int`.
Only the module of the subcommand being run is imported, so a missing or broken one (e.g. `search`) does not
break the others and `hf-minitron --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import re
import sys

__all__ = ["build_parser", "main"]

COMMANDS = {
    "prune": "Estimate importance on calibration text and prune a model to the target shape.",
    "distill": "Retrain a pruned student by knowledge distillation from its teacher.",
    "eval": "Held-out perplexity (and lm-evaluation-harness tasks) as JSON; updates the model card.",
    "push": "Upload a model folder to the Hugging Face Hub as one commit.",
    "quickstart": "The whole method offline on a built-in corpus: teacher, prune, distill vs scratch.",
    "search": "Rank candidate architectures for a parameter budget.",
    "teacher-logits": "Run the teacher once and store its top-k next-token log-probs for offline distillation.",
}

# their stdout is one JSON object
JSON_COMMANDS = {"prune", "distill", "eval", "push", "search", "teacher-logits"}

logger = logging.getLogger("hf_minitron")


def _command_of(argv: list[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def _escape_percent(parser: argparse.ArgumentParser) -> None:
    """Help texts of dataclass fields may say "50%"; argparse %-formats them, so escape lone percent signs."""
    for action in parser._actions:
        if action.help and "%" in action.help:
            action.help = re.sub(r"%(?!\(\w+\)[sdrf])", "%%", action.help)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `hf-minitron` parser; the full options are added for `command` only (the others are listed)."""
    from hf_minitron import __version__

    parser = argparse.ArgumentParser(
        prog="hf-minitron",
        description="Minitron structured pruning and knowledge distillation for transformers causal LMs.",
    )
    parser.add_argument("--version", action="version", version=f"hf-minitron {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="Log at INFO level.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if command is not None:
        from transformers import HfArgumentParser

        subparsers._parser_class = (
            HfArgumentParser  # subcommands parse dataclass fields like transformers does
        )
    for name, help_text in COMMANDS.items():
        if name != command:
            subparsers.add_parser(name, help=help_text, add_help=False)
            continue
        try:
            module = importlib.import_module(f"hf_minitron.cli.{name.replace('-', '_')}")
        except ImportError as e:
            raise SystemExit(f"hf-minitron {name} is not available: {e}") from e
        sub = module.add_parser(subparsers)
        _escape_percent(sub)
        sub.set_defaults(_run=module.run, _parser=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hf-minitron` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("hf_minitron").setLevel(logging.INFO if args.verbose else logging.WARNING)
    hook = getattr(args, "_config_hook", None)  # e.g. quickstart --smoke picks another recipe
    config = hook(args) if hook else getattr(args, "config", None)
    if config:
        from hf_minitron.cli.common import apply_recipe

        try:
            apply_recipe(args._parser, config, getattr(args, "_sections", None))
        except (ValueError, FileNotFoundError) as e:
            parser.exit(2, f"hf-minitron {command}: error: {e}\n")
        args = parser.parse_args(argv)  # flags given on the command line override the recipe
        args.config = config
    args._command_line = ["hf-minitron", *argv]  # recorded on model cards (tokens redacted)
    from hf_minitron.cli.common import stdout_for_the_result
    from hf_minitron.process_group import end_process_group, import_before_the_process_group, under_torchrun

    # a command that prints JSON keeps stdout for it alone (libraries' prints go to stderr); quickstart talks to people
    quiet = stdout_for_the_result() if command in JSON_COMMANDS else contextlib.nullcontext()
    try:
        with quiet:
            # so that the process group can be freed at the end (see hf_minitron.process_group)
            if under_torchrun():
                import_before_the_process_group()
            status = int(args._run(args) or 0)
            end_process_group()  # a group (and its gloo threads) left to interpreter exit can abort the process
        return status
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"hf-minitron {command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
