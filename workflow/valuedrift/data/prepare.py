"""`valuedrift prepare-data`: write one dataset in the project's schemas.

`--kind` picks the dataset (pretrain, sft, preference, probe-pairs, eval-prompts, value-questions,
judge-train, judge-test, prism-prompts). For SFT and preference sets, and the representation probe's
held-out pairs, `--settings` is the dataset's whole entry in the config, whose one key says where the
rows come from:
- `miniature`: drawn from the miniature world (seeded, with a known stance mixture);
- `hub`: a hub dataset (or a local copy) normalized by `valuedrift.data.hub`;
- `synthetic`: value-gap pairs built by `valuedrift build-value-gap` (`--pairs`);
- `derived`: another preference set's pairs (`--source`) relabelled: chosen and rejected swapped
  in a seeded choice of round(n·(1 − gap_share)/2) pairs, so the texts stay the same and the net
  value gap is gap_share times the source's (0: a null set, no net gap; 1: the source itself).
The other kinds come from the world (`--settings` is then its own entry, e.g. `judge_data`),
except prism-prompts, whose `--settings` is a hub source. The same config always writes the
same file.
"""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)

KINDS = ("pretrain", "sft", "preference", "probe-pairs", "eval-prompts", "value-questions", "judge-train",
         "judge-test", "prism-prompts")


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "prepare-data", __doc__)
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--name", default="", help="dataset name (sft and preference sets)")
    parser.add_argument("--world", required=True, help="JSON: the config's `world` section and `seed`")
    parser.add_argument("--settings", default="{}", help="JSON: the dataset's entry in the config")
    parser.add_argument("--pairs", default=None, help="synthetic sets: the value-gap pairs file")
    parser.add_argument("--source", default=None, help="derived sets: the preference set whose pairs are relabelled")
    parser.add_argument("--output", required=True, help="JSONL file to write")
    return parser


def world_rows(kind: str, name: str, world_settings: dict, settings: dict):
    from valuedrift.world.datasets import World

    world = World(world_settings["seed"], world_settings["eval_questions_per_topic"],
                  world_settings["judge_test_questions_per_topic"])
    if kind == "pretrain":
        return world.pretrain_rows(settings["size"], settings["terse_share"])
    if kind == "sft":
        return world.sft_rows(name, settings["size"], settings["mixture"])
    if kind in ("preference", "probe-pairs"):
        # probe pairs are asked on the held-out questions (evaluation and judge-test), which no
        # training set uses: 7 prompts per topic in the default world, so a probe has 77 groups
        return world.preference_rows(name or kind, settings["size"], settings["kind"], settings.get("mixture", {}),
                                     settings.get("chosen"), settings.get("rejected"),
                                     split=("eval", "judge_test") if kind == "probe-pairs" else "train")
    if kind == "eval-prompts":
        return world.eval_prompt_rows()
    if kind == "value-questions":  # training questions: disjoint from the evaluation questions
        return ({"question_id": q.id, "topic": q.topic, "question": q.question} for q in world.split("train"))
    split = kind.removeprefix("judge-")
    return world.judge_rows(split, settings[f"{split}_size"], settings["noise_share"])


def hub_rows(settings: dict, seed: int):
    from valuedrift.config import from_dict
    from valuedrift.data.hub import HubSource, load_rows

    return load_rows(from_dict(HubSource, {"seed": seed, **settings}))


def rows_for(args: argparse.Namespace):
    world, settings = json.loads(args.world), json.loads(args.settings)
    if args.kind == "prism-prompts":
        return hub_rows(settings, world["seed"])
    if args.kind not in ("sft", "preference", "probe-pairs"):
        return world_rows(args.kind, args.name, world, settings)
    if "hub" in settings:
        return hub_rows(settings["hub"], world["seed"])
    if "synthetic" in settings:
        from valuedrift.data.value_gap import preference_rows

        return preference_rows(args.pairs, **settings["synthetic"], seed=world["seed"])
    if "derived" in settings:
        from valuedrift.io import read_jsonl

        rows = read_jsonl(args.source, required=["prompt", "chosen", "rejected"])
        return relabelled(rows, settings["derived"]["gap_share"], f"{world['seed']}/derived/{args.name}")
    return world_rows(args.kind, args.name, world, settings["miniature"])


def relabelled(rows: list[dict], gap_share: float, seed: str) -> list[dict]:
    """The pairs with chosen and rejected swapped in a seeded choice of round(n·(1 − gap_share)/2)
    of them: a swapped pair's gap counts against a kept one's, so the net gap is gap_share times
    the source's, with the very same texts."""
    import random

    swapped = set(random.Random(seed).sample(range(len(rows)), round(len(rows) * (1 - gap_share) / 2)))
    out = []
    for i, row in enumerate(rows):
        row = {**row, "swapped": i in swapped}
        if i in swapped:
            row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
            if "chosen_stance" in row:
                row["chosen_stance"], row["rejected_stance"] = row["rejected_stance"], row["chosen_stance"]
        out.append(row)
    return out


def main(args: argparse.Namespace) -> None:
    from valuedrift.io import write_jsonl

    n = write_jsonl(args.output, rows_for(args))
    log.info("wrote %d rows to %s", n, args.output)
