"""`valuedrift publish-start`: a run without training, for studies that skip a phase.

The alignment-internals study applies preference optimization directly to instruct models, with no
SFT phase. Such an SFT dataset (`skip: true`) still needs a run folder for the preference runs to
start from: this command saves the start model once as snapshot 0 and links snapshots 1..K to it,
so every path the workflow expects exists without K copies of the weights.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "publish-start", __doc__)
    parser.add_argument("--model", required=True, help="the start model (hub id or folder)")
    parser.add_argument("--run-dir", required=True, help="run folder to write (snapshots/0..K)")
    parser.add_argument("--snapshots", type=int, required=True, help="K: the last snapshot")
    parser.add_argument("--snapshot-dtype", default="auto", help="dtype to store the model in (auto: as it is)")
    parser.add_argument("--chat-template", default=None,
                        help="a tokenizer whose chat template the model takes (TRL's clone_chat_template)")
    return parser


def main(args: argparse.Namespace) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from valuedrift.checksums import folder_checksums
    from valuedrift.io import atomic_dir, write_json

    from valuedrift.training.train import require_chat_template

    folder = Path(args.run_dir) / "snapshots"
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=args.snapshot_dtype)
    if args.chat_template:
        from trl.chat_template_utils import clone_chat_template

        model, tokenizer, _ = clone_chat_template(model, tokenizer, args.chat_template)
    require_chat_template(tokenizer, args.model)
    with atomic_dir(folder / "0") as tmp:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        write_json(tmp / "meta.json", {"k": 0, "step": 0, "total_steps": 0, "fraction": 0.0,
                                       "start": args.model, "skipped": True, "checksums": folder_checksums(tmp)})
    for k in range(1, args.snapshots + 1):
        link = folder / str(k)
        if link.is_symlink():
            link.unlink()
        elif link.is_dir():  # the empty folder Snakemake makes for the output
            link.rmdir()
        os.symlink("0", link)  # relative, so the run folder can move
    log.info("published %s as the untrained run %s (snapshots 0..%d)", args.model, args.run_dir, args.snapshots)
