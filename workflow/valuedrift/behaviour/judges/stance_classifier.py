"""The trained stance classifier, the offline default judge, and `valuedrift train-judge`.

TF-IDF features of word and character n-grams feed a multinomial logistic regression, trained on
labelled answers and evaluated on answers to questions it never saw. Its predicted probabilities
are the soft labels, like the softmax over label log-probabilities that an LLM judge gives.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from valuedrift import STANCES

log = logging.getLogger(__name__)


def build_pipeline(C: float = 10.0):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
        # character n-grams keep the judge robust to the misspelt words small models write
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2),
    )
    return make_pipeline(features, LogisticRegression(C=C, max_iter=2000))


class StanceClassifierJudge:
    name = "stance_classifier"

    def __init__(self, pipeline, version: str):
        self.pipeline = pipeline
        self.version = version
        self._columns = [list(pipeline.classes_).index(s) for s in STANCES]

    @classmethod
    def load(cls, path: str) -> "StanceClassifierJudge":
        import joblib

        model_file = Path(path) / "model.joblib"
        version = hashlib.sha256(model_file.read_bytes()).hexdigest()[:12]
        return cls(joblib.load(model_file), version)

    def predict_proba(self, questions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        # the answer alone carries its stance; the question would only add topic words
        return self.pipeline.predict_proba(list(answers))[:, self._columns]


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "train-judge", __doc__)
    parser.add_argument("--train", required=True, help="labelled answers (JSONL: answer, stance)")
    parser.add_argument("--test", required=True, help="held-out labelled answers, other questions")
    parser.add_argument("--output", required=True, help="judge folder to write (model.joblib, metrics.json)")
    parser.add_argument("--min-accuracy", type=float, default=0.0,
                        help="fail when held-out accuracy is below this (a judge too weak to measure with)")
    return parser


def main(args: argparse.Namespace) -> None:
    import joblib
    from sklearn.metrics import accuracy_score, confusion_matrix

    from valuedrift.io import InputError, atomic_dir, read_jsonl, write_json

    train = read_jsonl(args.train, required=["answer", "stance"])
    test = read_jsonl(args.test, required=["answer", "stance"])
    for path, rows in ((args.train, train), (args.test, test)):
        bad = next((i for i, r in enumerate(rows) if r["stance"] not in STANCES), None)
        if bad is not None:
            raise InputError(f"{path}: row {bad + 1} has stance {rows[bad]['stance']!r}, not one of {STANCES}")
    pipeline = build_pipeline().fit([r["answer"] for r in train], [r["stance"] for r in train])
    truth = [r["stance"] for r in test]
    predicted = pipeline.predict([r["answer"] for r in test])
    accuracy = float(accuracy_score(truth, predicted))
    metrics = {"judge": StanceClassifierJudge.name, "held_out_accuracy": accuracy, "n_train": len(train),
               "n_test": len(test), "labels": list(STANCES),
               "confusion": confusion_matrix(truth, predicted, labels=list(STANCES)).tolist()}
    log.info("held-out accuracy %.3f on %d answers", accuracy, len(test))
    if accuracy < args.min_accuracy:
        raise InputError(f"judge held-out accuracy {accuracy:.3f} is below --min-accuracy {args.min_accuracy}")
    with atomic_dir(args.output) as out:
        joblib.dump(pipeline, out / "model.joblib")
        write_json(out / "metrics.json", metrics)
