"""`valuedrift judge`: the stance of every answer, as p(support), p(neutral), p(oppose).

Reads generations (or any JSONL with `question` and `answer`) and writes the same rows without the
texts, plus the judge's name, version and the three probabilities. Several files (a run's
snapshots) are judged in one process, one output each, so the judge loads once per run; with
`--judges`, several judges (the main one and those compared with it) judge them in turn, each
loaded once.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging

log = logging.getLogger(__name__)

# generation fields the stance table does not need; everything else (run tags, snapshot
# position, versions) is carried over
DROPPED = ("question", "answer", "generation")
# a float32 softmax sums to 1 within about 1e-7; more than this is a broken judge, not rounding
TOLERANCE = 1e-6


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.behaviour.judges import judge_arguments
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "judge", __doc__)
    parser.add_argument("--generations", required=True, nargs="+",
                        help="answers to judge (JSONL: question, answer, ...), one file per snapshot")
    judge_arguments(parser, required=False)
    parser.add_argument("--judges", default=None, type=json.loads,
                        help="JSON list of judges instead of --judge: [{name, settings, model_dir}, ...]")
    parser.add_argument("--output", required=True, nargs="+",
                        help="stances JSONL to write, one per --generations (per judge and --generations with "
                             "--judges, judge by judge)")
    return parser


def main(args: argparse.Namespace) -> None:
    from valuedrift.behaviour.judges import judge_from_args, load_judge
    from valuedrift.progress import items

    specs = args.judges or [None]
    for spec, outputs in items(zip(specs, outputs_by_judge(len(specs), args.generations, args.output, "--output")),
                               "judges", unit="judge"):
        judge = judge_from_args(args) if spec is None else load_judge(spec["name"], spec["settings"],
                                                                      spec.get("model_dir"))
        judge_files(judge, args.generations, outputs)


def outputs_by_judge(n_judges: int, inputs: list[str], outputs: list[str], flag: str) -> list[list[str]]:
    """Each judge's output files: `outputs` holds one per judge and input, judge by judge (the order
    the workflow's rules list them in)."""
    from valuedrift.io import InputError

    n = len(inputs)
    if n_judges * n != len(outputs):
        raise InputError(f"{n_judges} judge(s) x {n} inputs but {len(outputs)} {flag} files; give one per judge "
                         "and input, judge by judge")
    return [outputs[j * n:(j + 1) * n] for j in range(n_judges)]


def judge_file(judge, generations: str, output: str) -> None:
    judge_files(judge, [generations], [output])


def judge_files(judge, inputs: list[str], outputs: list[str]) -> None:
    """Every file's answers in one call of the judge, so that it batches across a run's snapshots:
    a local model fills its batches, and an API judge in batch mode submits one batch per job
    instead of one per snapshot (each of which could wait up to a day). Every file is checked
    before any is written."""
    from valuedrift import STANCES
    from valuedrift.io import read_jsonl, write_jsonl

    rows = [read_jsonl(path, required=("question", "answer")) for path in inputs]
    flat = [r for file_rows in rows for r in file_rows]
    probs = judge.predict_proba([r["question"] for r in flat], [r["answer"] for r in flat]) if flat else []
    if len(probs) != len(flat):
        check_probabilities(probs, flat, judge, ", ".join(inputs))  # names the shape that is wrong
    ends = list(itertools.accumulate(len(file_rows) for file_rows in rows))
    per_file = [probs[end - len(file_rows):end] for end, file_rows in zip(ends, rows)]
    for path, file_rows, file_probs in zip(inputs, rows, per_file):
        check_probabilities(file_probs, file_rows, judge, path)  # a bad row named by its file and line
    for path, output, file_rows, file_probs in zip(inputs, outputs, rows, per_file):
        out = ({**{k: v for k, v in r.items() if k not in DROPPED}, "judge": judge.name,
                "judge_version": judge.version, **{f"p_{s}": float(p[i]) for i, s in enumerate(STANCES)}}
               for r, p in zip(file_rows, file_probs))
        n = write_jsonl(output, out)
        log.info("%s: judged %d answers with %s (version %s)", path, n, judge.name, judge.version)


def check_probabilities(probs, rows: list[dict], judge, path: str) -> None:
    """Refuse, before anything is written, what is no distribution over the stances: a NaN row
    written here would be skipped by every mean downstream without a word."""
    import numpy as np

    from valuedrift import STANCES
    from valuedrift.io import InputError

    if not rows:
        return
    who = f"judge {judge.name!r} (version {judge.version})"
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(rows), len(STANCES)):
        raise InputError(f"{who} returned probabilities of shape {probs.shape} for the {len(rows)} answers of "
                         f"{path}, not ({len(rows)}, {len(STANCES)}) — the judge is broken; nothing was written")
    with np.errstate(invalid="ignore"):  # NaN compares False, which marks its row bad
        good = (np.isfinite(probs).all(axis=1) & (probs >= -TOLERANCE).all(axis=1)
                & (probs <= 1 + TOLERANCE).all(axis=1) & (np.abs(probs.sum(axis=1) - 1) <= TOLERANCE))
    if not good.all():
        i = int(np.argmin(good))
        qid = f" (question_id {rows[i]['question_id']})" if "question_id" in rows[i] else ""
        raise InputError(f"{path}: row {i + 1}{qid}: {who} gave p({', '.join(STANCES)}) = "
                         f"{[float(p) for p in probs[i]]}, not a distribution (finite, within [0, 1], summing "
                         f"to 1) — check the judge's model and settings; nothing was written")
