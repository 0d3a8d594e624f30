"""`valuedrift judge-report`: how far the judges can be trusted, on labelled answers.

Every compared judge labels the same answers, whose true stance is known. Two tables:
- calibration: per judge, accuracy, Cohen's kappa with the true labels, the Brier score, the
  expected calibration error (ECE: confidence vs accuracy over 10 confidence bins) and the mean
  probability each stance gets against its true share;
- agreement: Cohen's kappa between every pair of judges (their most probable labels), so a study
  can say whether its conclusions would change with another judge.
"""

from __future__ import annotations

import argparse
import itertools
import logging

import numpy as np

log = logging.getLogger(__name__)


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "judge-report", __doc__)
    parser.add_argument("judged", nargs="+", help="the labelled answers judged by each judge (stances JSONL with `stance`)")
    parser.add_argument("--calibration", required=True, help="CSV to write")
    parser.add_argument("--agreement", required=True, help="CSV to write")
    return parser


def expected_calibration_error(probs: np.ndarray, truth: np.ndarray, bins: int = 10) -> float:
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(confidence[members].mean() - (predicted[members] == truth[members]).mean())
    return float(error)


def calibration_row(judge: str, probs: np.ndarray, truth: np.ndarray) -> dict:
    from sklearn.metrics import cohen_kappa_score

    from valuedrift import STANCES

    onehot = np.eye(len(STANCES))[truth]
    row = {"judge": judge, "n": len(truth), "accuracy": float((probs.argmax(1) == truth).mean()),
           "kappa_vs_labels": float(cohen_kappa_score(truth, probs.argmax(1), labels=range(len(STANCES)))),
           "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
           "ece": expected_calibration_error(probs, truth)}
    for i, s in enumerate(STANCES):
        row[f"mean_p_{s}"], row[f"true_share_{s}"] = float(probs[:, i].mean()), float(onehot[:, i].mean())
    return row


def load(path: str):
    """(judge name, probabilities, true labels) of one judged file (in the labelled file's order)."""
    import pandas as pd

    from valuedrift import STANCES
    from valuedrift.io import InputError

    d = pd.read_json(path, lines=True)
    if "stance" not in d or not d["stance"].isin(STANCES).all():
        raise InputError(f"{path}: every row needs a true `stance` in {STANCES}")
    return d["judge"].iloc[0], d[[f"p_{s}" for s in STANCES]].to_numpy(), d["stance"].map(STANCES.index).to_numpy()


def main(args: argparse.Namespace) -> None:
    import pandas as pd
    from sklearn.metrics import cohen_kappa_score

    from valuedrift.io import InputError, write_csv

    judged = [load(p) for p in args.judged]
    if len({len(t) for _, _, t in judged}) > 1 or any((t != judged[0][2]).any() for _, _, t in judged):
        raise InputError("the judged files do not hold the same labelled answers")
    calibration = pd.DataFrame([calibration_row(name, probs, truth) for name, probs, truth in judged])
    agreement = pd.DataFrame([{"judge_a": a, "judge_b": b, "n": len(pa),
                               "kappa": float(cohen_kappa_score(pa.argmax(1), pb.argmax(1), labels=range(3))),
                               "label_agreement": float((pa.argmax(1) == pb.argmax(1)).mean())}
                              for (a, pa, _), (b, pb, _) in itertools.combinations(judged, 2)],
                             columns=["judge_a", "judge_b", "n", "kappa", "label_agreement"])
    write_csv(calibration, args.calibration)
    write_csv(agreement, args.agreement)
    for r in calibration.itertuples():
        log.info("%s: accuracy %.3f, kappa vs labels %.3f, ECE %.3f on %d answers", r.judge, r.accuracy,
                 r.kappa_vs_labels, r.ece, r.n)
