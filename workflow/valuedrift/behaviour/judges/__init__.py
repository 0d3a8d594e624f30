"""The judge registry: every judge turns (question, answer) pairs into p(support), p(neutral),
p(oppose), in the order of `valuedrift.STANCES`."""

from __future__ import annotations

import importlib
from typing import Protocol, Sequence

import numpy as np

# judge name -> "module:Class"; add a judge by adding a line here
JUDGES = {
    "stance_classifier": "valuedrift.behaviour.judges.stance_classifier:StanceClassifierJudge",
}


class Judge(Protocol):
    name: str
    version: str

    def predict_proba(self, questions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        """Array of shape (n, 3): p(support), p(neutral), p(oppose) per answer."""


def load_judge(name: str, path: str | None) -> Judge:
    if name not in JUDGES:
        from valuedrift.io import InputError

        raise InputError(f"unknown judge {name!r}; known: {', '.join(sorted(JUDGES))}")
    module, cls = JUDGES[name].split(":")
    return getattr(importlib.import_module(module), cls).load(path)
