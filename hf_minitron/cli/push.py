"""`hf-minitron push DIR --repo_id ORG/NAME`: upload a model folder to the Hub as one commit."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from hf_minitron.cli.arguments import dataclass_from_namespace


@dataclass
class PushArguments:
    """Where and how `hf-minitron push` uploads."""

    repo_id: str = field(metadata={"help": "Target repo, ORG/NAME (created if needed)."})
    private: bool = field(default=False, metadata={"help": "Create the repo as private."})
    dry_run: bool = field(
        default=False, metadata={"help": "List the files that would be uploaded; no network."}
    )
    commit_message: str | None = field(default=None, metadata={"help": "Commit message."})
    revision: str | None = field(default=None, metadata={"help": "Branch to commit to (default: main)."})
    token: str | None = field(
        default=None,
        metadata={"help": "Hub token (default: HF_TOKEN or `hf auth login`); never written anywhere."},
    )


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "push",
        dataclass_types=[PushArguments],
        help="Upload a model folder to the Hugging Face Hub as one commit.",
        description="Upload DIR (model, tokenizer, card; hidden files, Trainer checkpoints and pickles such as "
        "training_args.bin are skipped and listed) to the Hub as a single commit, creating the repo if needed. The "
        "token comes from --token, `hf auth login` or HF_TOKEN and is never written anywhere; a folder with a file "
        "that holds it is refused. --dry_run lists the files and touches no network.",
    )
    parser.add_argument("folder", metavar="DIR", help="Model folder to upload.")
    return parser


def run(args: argparse.Namespace) -> int:
    from hf_minitron.cli.common import print_json
    from hf_minitron.hub import push_folder

    push = dataclass_from_namespace(PushArguments, args)
    result = push_folder(args.folder, push.repo_id, private=push.private, commit_message=push.commit_message,
                         dry_run=push.dry_run, revision=push.revision, token=push.token)  # fmt: skip
    for entry in result["skipped"]:
        print(f"skipped {entry['path']}: {entry['reason']}", file=sys.stderr)
    if push.dry_run:
        total = sum(f["size"] for f in result["files"])
        print(
            f"dry run: would upload {len(result['files'])} files ({total:,} bytes) to {push.repo_id} in one commit",
            file=sys.stderr,
        )
    print_json(result)
    return 0
