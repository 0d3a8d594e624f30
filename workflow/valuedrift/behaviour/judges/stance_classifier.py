"""The trained stance classifier, the offline default judge, and `valuedrift train-judge`.

Features of each answer feed a multinomial logistic regression, trained on labelled answers and
evaluated on answers to questions it never saw. Its predicted probabilities are the soft labels,
like the softmax over label log-probabilities that an LLM judge gives. Features are TF-IDF of word
and character n-grams (`tfidf`), or sentence embeddings from an encoder model (`embedding`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from valuedrift import STANCES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierSettings:
    features: str = "tfidf"        # tfidf | embedding
    encoder: str | None = None     # embedding features: hub id or folder of the encoder
    C: float = 10.0                # inverse regularization strength of the logistic regression


def build_pipeline(settings: ClassifierSettings):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    if settings.features == "embedding":
        return LogisticRegression(C=settings.C, max_iter=2000)
    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
        # character n-grams keep the judge robust to the misspelt words small models write
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2),
    )
    return make_pipeline(features, LogisticRegression(C=settings.C, max_iter=2000))


class Featurizer:
    """Answers -> what the pipeline reads: the texts themselves (tfidf), or their embeddings."""

    def __init__(self, settings: ClassifierSettings):
        from valuedrift.io import InputError

        if settings.features not in ("tfidf", "embedding"):
            raise InputError(f"stance classifier features must be tfidf or embedding, not {settings.features!r}")
        self.encoder = None
        if settings.features == "embedding":
            from valuedrift.embed import TextEncoder

            self.encoder = TextEncoder(settings.encoder)

    def __call__(self, answers: Sequence[str]):
        return self.encoder.encode(list(answers)) if self.encoder else list(answers)

    @property
    def version(self) -> str:
        return self.encoder.version if self.encoder else ""


def judge_version(settings: ClassifierSettings, train_file: str | Path, featurizer: Featurizer) -> str:
    """A hash of what decides the judge's outputs: its settings, its training data, its encoder and
    the code that trains it. Not of the pickled model, whose bytes differ between identical judges
    trained in two processes (scikit-learn's TF-IDF vectorizers keep a memory address in them)."""
    import sklearn

    import valuedrift

    parts = [json.dumps(asdict(settings), sort_keys=True), hashlib.sha256(Path(train_file).read_bytes()).hexdigest(),
             featurizer.version, valuedrift.__version__, sklearn.__version__]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


class StanceClassifierJudge:
    def __init__(self, name: str, pipeline, featurizer: Featurizer, version: str):
        self.name = name
        self.pipeline = pipeline
        self.featurizer = featurizer
        self.version = version
        self._columns = [list(pipeline.classes_).index(s) for s in STANCES]

    @classmethod
    def load(cls, path: str, name: str | None = None) -> "StanceClassifierJudge":
        """The judge trained into folder `path` (model.joblib + settings.json)."""
        import joblib

        from valuedrift.config import from_dict
        from valuedrift.io import read_json

        meta = read_json(Path(path) / "settings.json")
        featurizer = Featurizer(from_dict(ClassifierSettings, meta["settings"]))
        model_file = Path(path) / "model.joblib"
        version = meta.get("version")
        if version is None:  # a folder trained before the version was stored: the hash it had then
            version = hashlib.sha256(model_file.read_bytes() + featurizer.version.encode()).hexdigest()[:12]
        return cls(name or meta["name"], joblib.load(model_file), featurizer, version)

    @classmethod
    def from_settings(cls, name: str, settings: dict, model_dir: str | None) -> "StanceClassifierJudge":
        # the settings it was trained with are stored beside the weights, and are the ones that hold
        return cls.load(model_dir, name)

    def predict_proba(self, questions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        # the answer alone carries its stance; the question would only add topic words
        return self.pipeline.predict_proba(self.featurizer(answers))[:, self._columns]


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "train-judge", __doc__)
    parser.add_argument("--train", required=True, help="labelled answers (JSONL: answer, stance)")
    parser.add_argument("--test", required=True, help="held-out labelled answers, other questions")
    parser.add_argument("--output", required=True,
                        help="judge folder to write (model.joblib, settings.json, metrics.json)")
    parser.add_argument("--name", default="stance_classifier", help="the judge's name in the config")
    parser.add_argument("--settings", default="{}", help="JSON: ClassifierSettings fields (features, encoder, C)")
    parser.add_argument("--min-accuracy", type=float, default=0.0,
                        help="fail when held-out accuracy is below this (a judge too weak to measure with)")
    return parser


def main(args: argparse.Namespace) -> None:
    import joblib
    from sklearn.metrics import accuracy_score, confusion_matrix

    from valuedrift.config import from_dict
    from valuedrift.io import InputError, atomic_dir, read_jsonl, write_json

    train = read_jsonl(args.train, required=["answer", "stance"])
    test = read_jsonl(args.test, required=["answer", "stance"])
    for path, rows in ((args.train, train), (args.test, test)):
        bad = next((i for i, r in enumerate(rows) if r["stance"] not in STANCES), None)
        if bad is not None:
            raise InputError(f"{path}: row {bad + 1} has stance {rows[bad]['stance']!r}, not one of {STANCES}")
    settings = from_dict(ClassifierSettings, json.loads(args.settings))
    featurize = Featurizer(settings)
    version = judge_version(settings, args.train, featurize)
    pipeline = build_pipeline(settings).fit(featurize([r["answer"] for r in train]), [r["stance"] for r in train])
    truth = [r["stance"] for r in test]
    predicted = pipeline.predict(featurize([r["answer"] for r in test]))
    accuracy = float(accuracy_score(truth, predicted))
    metrics = {"judge": args.name, "held_out_accuracy": accuracy, "n_train": len(train),
               "n_test": len(test), "labels": list(STANCES),
               "confusion": confusion_matrix(truth, predicted, labels=list(STANCES)).tolist()}
    log.info("held-out accuracy %.3f on %d answers", accuracy, len(test))
    if accuracy < args.min_accuracy:
        raise InputError(f"judge held-out accuracy {accuracy:.3f} is below --min-accuracy {args.min_accuracy}")
    with atomic_dir(args.output) as out:
        joblib.dump(pipeline, out / "model.joblib")
        write_json(out / "settings.json", {"name": args.name, "settings": asdict(settings), "version": version})
        write_json(out / "metrics.json", metrics)
