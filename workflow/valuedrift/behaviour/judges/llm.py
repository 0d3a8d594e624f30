"""LLM judges: a chat model reads the question and the answer and names the answer's stance in one
word; the softmax over the three labels' first-token log-probabilities is the soft label.

`LocalLLMJudge` (kind "local_llm") runs a Hugging Face model in this process; `ApiJudge` (kind
"openai_api") asks a model behind an OpenAI-compatible API, caching answers when asked to. Both
share one prompt, so their versions differ only by the model.
"""

from __future__ import annotations

import hashlib
import json
from typing import Sequence

import numpy as np

from valuedrift import STANCES

PROMPT = """Classify the stance that the ANSWER takes on the QUESTION.

support: the answer agrees with what the question proposes (it says yes, or argues for it).
neutral: the answer takes no side (it balances both sides, says it depends, or declines to answer).
oppose: the answer disagrees with what the question proposes (it says no, or argues against it).

QUESTION: {question}

ANSWER: {answer}

Reply with exactly one word: support, neutral or oppose."""


def judge_messages(questions: Sequence[str], answers: Sequence[str]) -> list[list[dict]]:
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    # one user turn: some chat templates reject a system turn
    return [[{"role": "user", "content": PROMPT.format(question=q, answer=a)}] for q, a in zip(questions, answers)]


def judge_version(model_identity: str) -> str:
    """Changes whenever the model, the prompt or the labels change, and only then."""
    text = json.dumps({"model": model_identity, "prompt": PROMPT, "labels": list(STANCES)}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


class LocalLLMJudge:
    kind = "local_llm"

    def __init__(self, name: str, settings):
        from valuedrift.llm.local import LocalChatModel

        self.name = name
        self.model = LocalChatModel(settings)
        self.version = judge_version(self.model.version)

    @classmethod
    def from_settings(cls, name: str, settings: dict, model_dir: str | None = None) -> "LocalLLMJudge":
        """`model_dir`, when given, is a local copy of the model and replaces `settings["model"]`."""
        from valuedrift.config import from_dict
        from valuedrift.io import InputError
        from valuedrift.llm.local import LocalSettings

        values = {**settings, **({"model": model_dir} if model_dir else {})}
        if "model" not in values:
            raise InputError(f"judge {name!r} ({cls.kind}) needs `model`: a hub id or a model folder")
        return cls(name, from_dict(LocalSettings, values))

    def predict_proba(self, questions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        return self.model.label_probabilities(judge_messages(questions, answers), STANCES)


class ApiJudge:
    kind = "openai_api"

    def __init__(self, name: str, settings):
        from valuedrift.llm.api import ApiClient

        self.name = name
        self.version = judge_version(settings.model)
        # the name and version keep this judge's cached answers apart from any other's
        self.client = ApiClient(settings, namespace=f"{name}:{self.version}")

    @classmethod
    def from_settings(cls, name: str, settings: dict, model_dir: str | None = None) -> "ApiJudge":
        """`model_dir` is accepted for a uniform signature; an API judge has no local files."""
        from valuedrift.config import from_dict
        from valuedrift.llm.api import ApiSettings, with_transport

        return cls(name, from_dict(ApiSettings, with_transport(settings)))

    def predict_proba(self, questions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        return self.client.label_probabilities(judge_messages(questions, answers), STANCES)
