"""The judge registry: every judge turns (question, answer) pairs into p(support), p(neutral),
p(oppose), in the order of `valuedrift.STANCES`.

A judge is configured by name under `judges:` in the config; its `kind` picks the class here.
"""

from __future__ import annotations

import importlib
from typing import Protocol, Sequence

import numpy as np

# judge kind -> "module:Class"; add a kind of judge by adding a line here
JUDGES = {
    "stance_classifier": "valuedrift.behaviour.judges.stance_classifier:StanceClassifierJudge",
    "local_llm": "valuedrift.behaviour.judges.llm:LocalLLMJudge",
    "openai_api": "valuedrift.behaviour.judges.llm:ApiJudge",
}
# kinds trained here (`valuedrift train-judge`) before they can judge
TRAINED = ("stance_classifier",)


class Judge(Protocol):
    name: str
    version: str

    def predict_proba(self, questions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        """Array of shape (n, 3): p(support), p(neutral), p(oppose) per answer."""


def load_judge(name: str, settings: dict, model_dir: str | None = None) -> Judge:
    """The judge `name` configured by `settings` (its entry under `judges:`, with `kind`);
    `model_dir` is the folder a trained judge was written to."""
    from valuedrift.io import InputError

    settings = dict(settings)
    kind = settings.pop("kind", "stance_classifier")
    if kind not in JUDGES:
        raise InputError(f"judge {name!r}: unknown kind {kind!r}; known: {', '.join(sorted(JUDGES))}")
    if kind in TRAINED and not model_dir:
        raise InputError(f"judge {name!r} is trained here: give its folder (--judge-model)")
    module, cls = JUDGES[kind].split(":")
    return getattr(importlib.import_module(module), cls).from_settings(name, settings, model_dir)
