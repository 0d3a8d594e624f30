"""`valuedrift judge`: the stance of every answer, as p(support), p(neutral), p(oppose).

Reads generations (or any JSONL with `question` and `answer`) and writes the same rows without the
texts, plus the judge's name, version and the three probabilities.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

# generation fields the stance table does not need; everything else (run tags, snapshot
# position, versions) is carried over
DROPPED = ("question", "answer", "generation")


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.behaviour.judges import judge_arguments
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "judge", __doc__)
    parser.add_argument("--generations", required=True, help="answers to judge (JSONL: question, answer, ...)")
    judge_arguments(parser, required=False)
    parser.add_argument("--output", required=True, help="stances JSONL to write")
    return parser


def main(args: argparse.Namespace) -> None:
    from valuedrift import STANCES
    from valuedrift.behaviour.judges import judge_from_args
    from valuedrift.io import read_jsonl, write_jsonl

    rows = read_jsonl(args.generations, required=("question", "answer"))
    judge = judge_from_args(args)
    probs = judge.predict_proba([r["question"] for r in rows], [r["answer"] for r in rows]) if rows else []
    out = ({**{k: v for k, v in r.items() if k not in DROPPED}, "judge": judge.name,
            "judge_version": judge.version, **{f"p_{s}": float(p[i]) for i, s in enumerate(STANCES)}}
           for r, p in zip(rows, probs))
    n = write_jsonl(args.output, out)
    log.info("judged %d answers with %s (version %s)", n, judge.name, judge.version)
