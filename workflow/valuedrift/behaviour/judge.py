"""`valuedrift judge`: the stance of every generated answer, as p(support), p(neutral), p(oppose)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

# generation fields the stance table does not need; everything else (run tags, snapshot
# position, versions) is carried over
DROPPED = ("question", "answer", "generation")


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "judge", __doc__)
    parser.add_argument("--generations", required=True, help="generations JSONL")
    parser.add_argument("--judge", default="stance_classifier", help="judge name (see valuedrift.behaviour.judges)")
    parser.add_argument("--judge-model", default=None, help="the judge's trained model folder, where it has one")
    parser.add_argument("--output", required=True, help="stances JSONL to write")
    return parser


def main(args: argparse.Namespace) -> None:
    from valuedrift import STANCES
    from valuedrift.behaviour.judges import load_judge
    from valuedrift.io import read_jsonl, write_jsonl

    rows = read_jsonl(args.generations, required=("question_id", "topic", "sample", "question", "answer"))
    judge = load_judge(args.judge, args.judge_model)
    probs = judge.predict_proba([r["question"] for r in rows], [r["answer"] for r in rows]) if rows else []
    out = ({**{k: v for k, v in r.items() if k not in DROPPED}, "judge": judge.name,
            "judge_version": judge.version, **{f"p_{s}": float(p[i]) for i, s in enumerate(STANCES)}}
           for r, p in zip(rows, probs))
    n = write_jsonl(args.output, out)
    log.info("judged %d answers with %s (version %s)", n, judge.name, judge.version)
