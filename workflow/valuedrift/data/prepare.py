"""`valuedrift prepare-data`: write one dataset of the miniature world.

`--kind` picks the dataset (pretrain, sft, preference, eval-prompts, judge-train, judge-test);
`--settings` is its entry from config.yaml as JSON. Output rows follow the schemas in
`valuedrift.world.datasets`. Generation is seeded, so the same config always writes the same file.
"""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)

KINDS = ("pretrain", "sft", "preference", "eval-prompts", "judge-train", "judge-test")


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "prepare-data", __doc__)
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--name", default="", help="dataset name (sft and preference sets)")
    parser.add_argument("--world", required=True, help="JSON: the config's `world` section")
    parser.add_argument("--settings", default="{}", help="JSON: the dataset's own settings")
    parser.add_argument("--output", required=True, help="JSONL file to write")
    return parser


def rows_for(kind: str, name: str, world_settings: dict, settings: dict):
    from valuedrift.world.datasets import World

    world = World(world_settings["seed"], world_settings["eval_questions_per_topic"],
                  world_settings["judge_test_questions_per_topic"])
    if kind == "pretrain":
        return world.pretrain_rows(settings["size"], settings["terse_share"])
    if kind == "sft":
        return world.sft_rows(name, settings["size"], settings["mixture"])
    if kind == "preference":
        return world.preference_rows(name, settings["size"], settings["kind"], settings.get("mixture", {}),
                                     settings.get("chosen"), settings.get("rejected"))
    if kind == "eval-prompts":
        return world.eval_prompt_rows()
    split = kind.removeprefix("judge-")
    return world.judge_rows(split, settings[f"{split}_size"], settings["noise_share"])


def main(args: argparse.Namespace) -> None:
    from valuedrift.io import write_jsonl

    n = write_jsonl(args.output, rows_for(args.kind, args.name, json.loads(args.world), json.loads(args.settings)))
    log.info("wrote %d rows to %s", n, args.output)
