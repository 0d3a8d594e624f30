"""The hand-written question bank (questions.yaml) and its deterministic split.

Each topic's questions are shuffled with a seed and cut into three disjoint parts:
`eval` (asked of every snapshot; never in any training set), `judge_test` (the judge's held-out
questions) and `train` (everything the models and the judge learn from).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

SPLITS = ("eval", "judge_test", "train")


@dataclass(frozen=True)
class Question:
    id: str
    topic: str
    question: str
    proposition: str
    split: str


@dataclass(frozen=True)
class Topic:
    name: str
    title: str
    support_reasons: tuple[str, ...]
    oppose_reasons: tuple[str, ...]


@lru_cache(maxsize=1)
def load_bank() -> dict:
    text = resources.files("valuedrift.world").joinpath("questions.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def topics() -> dict[str, Topic]:
    return {
        name: Topic(name, t["title"], tuple(t["support_reasons"]), tuple(t["oppose_reasons"]))
        for name, t in load_bank().items()
    }


def split_questions(seed: int, n_eval: int, n_judge_test: int) -> list[Question]:
    """All questions with their split; the same seed always gives the same split."""
    out = []
    for topic, spec in load_bank().items():
        items = list(enumerate(spec["questions"]))
        if n_eval + n_judge_test >= len(items):
            raise ValueError(
                f"topic {topic!r} has {len(items)} questions; eval ({n_eval}) + judge_test "
                f"({n_judge_test}) must leave at least one for training"
            )
        random.Random(f"{seed}/split/{topic}").shuffle(items)
        for rank, (index, q) in enumerate(items):
            split = "eval" if rank < n_eval else "judge_test" if rank < n_eval + n_judge_test else "train"
            out.append(Question(f"{topic}/{index:02d}", topic, q["question"], q["proposition"], split))
    return sorted(out, key=lambda q: q.id)
