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


def judge_arguments(parser, required: bool = True) -> None:
    """The flags naming a judge, shared by every command that judges (`judge_from_args` reads them);
    not required: the trained stance classifier by default."""
    defaults = {} if required else {"--judge": "stance_classifier", "--judge-settings": '{"kind": "stance_classifier"}'}
    parser.add_argument("--judge", required=required, default=defaults.get("--judge"),
                        help="the judge's name in the config")
    parser.add_argument("--judge-settings", required=required, default=defaults.get("--judge-settings"),
                        help="JSON: the judge's entry under `judges:` (kind and its settings)")
    parser.add_argument("--judge-model", default=None, help="the judge's trained model folder, where it has one")


def judge_from_args(args) -> Judge:
    import json

    return load_judge(args.judge, json.loads(args.judge_settings), args.judge_model)
