"""`hf-minitron quickstart [--output DIR]`: the whole method offline on the built-in corpus."""

from __future__ import annotations

import argparse

from hf_minitron.cli.arguments import dataclass_from_namespace
from hf_minitron.cli.common import add_config_flag

SECTIONS = ["quickstart", "pruning"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    from hf_minitron.config import PruningConfig
    from hf_minitron.quickstart.settings import QuickstartArguments

    parser = subparsers.add_parser(
        "quickstart",
        dataclass_types=[QuickstartArguments, PruningConfig],
        help="The whole method offline on a built-in corpus: teacher, prune, distill vs scratch.",
        description="Train (once, then cached) a small Llama teacher on Python's documentation, prune it to about "
        "half its parameters with Minitron importance, distill it for a fixed token budget, train the same shape "
        "from scratch on the same tokens, and write the distilled model, its card, results.json and "
        "loss_curve.png to --output. Settings come from recipes/quickstart.yaml (--config); flags override it.",
    )
    parser.add_argument("--output", "-o", default="quickstart-output", help="Output folder.")
    parser.add_argument("--smoke", action="store_true",
                        help="Use the tiny quickstart-smoke recipe (well under a minute; for tests).")  # fmt: skip
    add_config_flag(parser, SECTIONS)
    parser.set_defaults(config="quickstart", _config_hook=_recipe_of)
    return parser


def _recipe_of(args: argparse.Namespace) -> str:
    """`--smoke` swaps the default recipe for the tiny one; an explicit --config wins."""
    return "quickstart-smoke" if args.smoke and args.config == "quickstart" else args.config


def run(args: argparse.Namespace) -> int:
    from hf_minitron.cli.arguments import load_recipe
    from hf_minitron.config import PruningConfig
    from hf_minitron.hub import recorded_command
    from hf_minitron.quickstart import QuickstartArguments, run_quickstart

    settings = dataclass_from_namespace(QuickstartArguments, args)
    pruning = dataclass_from_namespace(PruningConfig, args)
    distillation = load_recipe(args.config, ["distillation"]).get("distillation", {})
    run_quickstart(args.output, settings=settings, pruning=pruning, distillation=distillation,
                   command=recorded_command(args._command_line))  # fmt: skip
    return 0
