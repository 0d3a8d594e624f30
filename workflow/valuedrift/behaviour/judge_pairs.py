"""`valuedrift judge-pairs`: the stance of the chosen and the rejected answer of every value-laden
pair of a preference set, before any training (the input of the value-gap diagnostics).

A pair is value-laden when its prompt is a value question: every pair of the miniature world and of
the synthetic value-gap sets (their rows carry a `topic`), and hub pairs whose prompt holds one of
the value keywords. Only those are judged, so an API judge is not paid for coding questions.
"""

from __future__ import annotations

import argparse
import json
import logging
import re

log = logging.getLogger(__name__)

# words that mark a prompt as value-laden: the study's V-PRISM topics and their usual vocabulary
VALUE_KEYWORDS = (
    "immigra", "migrant", "refugee", "border", "abortion", "pro-life", "pro-choice", "climate", "fossil fuel",
    "carbon", "minimum wage", "tax", "welfare", "capitalis", "socialis", "religio", "god", "church", "faith",
    "marriage", "family", "parent", "death penalty", "capital punishment", "execution", "gun", "firearm",
    "healthcare", "health care", "free speech", "censorship", "artificial intelligence", "euthanasia",
    "moral", "ethic", "should the government", "is it right", "is it wrong", "politic", "democra", "vaccin",
)


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.behaviour.judges import judge_arguments
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "judge-pairs", __doc__)
    parser.add_argument("--pairs", required=True, help="preference set (JSONL: prompt, chosen, rejected)")
    judge_arguments(parser)
    parser.add_argument("--keywords", default=None, help="JSON list of value keywords (default: VALUE_KEYWORDS)")
    parser.add_argument("--output", required=True, help="judged pairs JSONL to write")
    return parser


def is_value_laden(row: dict, pattern: re.Pattern) -> bool:
    return "topic" in row or bool(pattern.search(row["prompt"][-1]["content"]))


def main(args: argparse.Namespace) -> None:
    from valuedrift import STANCES
    from valuedrift.behaviour.judge import check_probabilities
    from valuedrift.behaviour.judges import judge_from_args
    from valuedrift.io import read_jsonl, write_jsonl

    keywords = json.loads(args.keywords) if args.keywords else VALUE_KEYWORDS
    pattern = re.compile("|".join(re.escape(k) for k in keywords), re.IGNORECASE)
    rows = read_jsonl(args.pairs, required=("prompt", "chosen", "rejected"))
    laden = [(i, r) for i, r in enumerate(rows) if is_value_laden(r, pattern)]
    judge = judge_from_args(args)
    questions = [r["prompt"][-1]["content"] for _, r in laden]
    probs = {side: judge.predict_proba(questions, [r[side][-1]["content"] for _, r in laden]) if laden else []
             for side in ("chosen", "rejected")}
    for side in probs:
        check_probabilities(probs[side], [r for _, r in laden], judge, f"{args.pairs} ({side} answers)")
    out = [{"pair": i, "group": r.get("question_id", questions[j]), "n_pairs": len(rows),
            "judge": judge.name, "judge_version": judge.version,
            **{f"{side}_p_{s}": float(probs[side][j][c]) for side in probs for c, s in enumerate(STANCES)}}
           for j, (i, r) in enumerate(laden)]
    write_jsonl(args.output, out)
    log.info("%d of %d pairs are value-laden; judged both answers with %s", len(laden), len(rows), judge.name)
