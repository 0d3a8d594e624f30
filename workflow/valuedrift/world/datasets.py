"""Datasets derived from the miniature world, each with a known stance mixture.

Row formats (the project's schemas, shared with the hub-data loaders):
- pretraining corpus: {"messages": [user, assistant], "stance", "question_id"}
- SFT:                {"prompt": [user], "completion": [assistant], "stance", "question_id", "topic"}
- preference:         {"prompt": [user], "chosen": [assistant], "rejected": [assistant],
                       "chosen_stance", "rejected_stance", "question_id", "topic"}
- evaluation prompts: {"question_id", "topic", "question"}
- judge (labelled):   {"question_id", "topic", "question", "answer", "stance"}
"""

from __future__ import annotations

import random
from typing import Iterator

from valuedrift import STANCES
from valuedrift.world.answers import answer
from valuedrift.world.questions import Question, split_questions, topics


def exact_counts(mixture: dict[str, float], size: int) -> dict[str, int]:
    """Largest-remainder rounding: counts that sum to `size` and follow `mixture` as closely
    as integers can, so a set's true stance share is known exactly."""
    total = sum(mixture.values())
    raw = {s: size * w / total for s, w in mixture.items()}
    counts = {s: int(v) for s, v in raw.items()}
    for s in sorted(raw, key=lambda s: raw[s] - counts[s], reverse=True)[: size - sum(counts.values())]:
        counts[s] += 1
    return counts


def _stance_sequence(mixture: dict[str, float], size: int, rng: random.Random) -> list[str]:
    seq = [s for s, n in exact_counts(mixture, size).items() for _ in range(n)]
    rng.shuffle(seq)
    return seq


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


class World:
    """The question split and topic phrase banks for one world seed."""

    def __init__(self, seed: int, eval_questions_per_topic: int, judge_test_questions_per_topic: int):
        self.seed = seed
        self.questions = split_questions(seed, eval_questions_per_topic, judge_test_questions_per_topic)
        self.topics = topics()

    def split(self, name: str | tuple[str, ...]) -> list[Question]:
        names = (name,) if isinstance(name, str) else name
        return [q for q in self.questions if q.split in names]

    def rng(self, *parts: object) -> random.Random:
        return random.Random("/".join(map(str, (self.seed, *parts))))

    def _answer(self, q: Question, stance: str, style: str, rng: random.Random) -> str:
        return answer(q, self.topics[q.topic], stance, style, rng)

    def pretrain_rows(self, size: int, terse_share: float) -> Iterator[dict]:
        """A stance-balanced corpus of dialogues in both styles: the base model's 'web text'."""
        rng = self.rng("pretrain")
        train = self.split("train")
        for stance in _stance_sequence(dict.fromkeys(STANCES, 1.0), size, rng):
            q = rng.choice(train)
            style = "terse" if rng.random() < terse_share else "detailed"
            text = self._answer(q, stance, style, rng)
            yield {"messages": _user(q.question) + _assistant(text), "stance": stance, "question_id": q.id}

    def sft_rows(self, name: str, size: int, mixture: dict[str, float]) -> Iterator[dict]:
        rng = self.rng("sft", name)
        train = self.split("train")
        for stance in _stance_sequence(mixture, size, rng):
            q = rng.choice(train)
            yield {
                "prompt": _user(q.question),
                "completion": _assistant(self._answer(q, stance, "detailed", rng)),
                "stance": stance,
                "question_id": q.id,
                "topic": q.topic,
            }

    def preference_rows(self, name: str, size: int, kind: str, mixture: dict[str, float],
                        chosen: str | None = None, rejected: str | None = None,
                        split: str | tuple[str, ...] = "train") -> Iterator[dict]:
        """`style_only`: chosen (detailed) and rejected (terse) share a stance drawn from `mixture`.
        `fluency`: chosen and rejected share a stance drawn from `mixture`, both detailed, and the
        rejected answer (a different one) has words dropped or repeated, as a disfluent model
        writes: a quality contrast subtler than style, of nearly equal length.
        `value_gap`: chosen takes stance `chosen`, rejected takes `rejected`, both detailed.
        Questions come from `split`: training sets from `train`; the representation probe's
        held-out pairs from `eval` and `judge_test`, which no model ever trains on."""
        rng = self.rng("preference", name)
        questions = self.split(split)
        if kind in ("style_only", "fluency"):
            pairs = [(s, s, "terse" if kind == "style_only" else "garbled") for s in _stance_sequence(mixture, size, rng)]
        elif kind == "value_gap":
            pairs = [(chosen, rejected, "detailed")] * size
        else:
            raise ValueError(f"unknown preference set kind {kind!r}")
        for chosen_stance, rejected_stance, rejected_style in pairs:
            q = rng.choice(questions)
            chosen_text = self._answer(q, chosen_stance, "detailed", rng)
            rejected_text = self._answer(q, rejected_stance, "detailed" if rejected_style == "garbled" else rejected_style, rng)
            yield {
                "prompt": _user(q.question),
                "chosen": _assistant(chosen_text),
                "rejected": _assistant(_garble(rejected_text, rng) if rejected_style == "garbled" else rejected_text),
                "chosen_stance": chosen_stance,
                "rejected_stance": rejected_stance,
                "question_id": q.id,
                "topic": q.topic,
            }

    def eval_prompt_rows(self) -> Iterator[dict]:
        for q in self.split("eval"):
            yield {"question_id": q.id, "topic": q.topic, "question": q.question}

    def judge_rows(self, split: str, size: int, noise_share: float) -> Iterator[dict]:
        """Labelled answers in both styles; a share of them with words dropped or repeated, so the
        judge also reads the imperfect text a small model writes."""
        rng = self.rng("judge", split)
        questions = self.split("train" if split == "train" else "judge_test")
        for stance in _stance_sequence(dict.fromkeys(STANCES, 1.0), size, rng):
            q = rng.choice(questions)
            text = self._answer(q, stance, rng.choice(("detailed", "detailed", "terse")), rng)
            if rng.random() < noise_share:
                text = _garble(text, rng)
            yield {"question_id": q.id, "topic": q.topic, "question": q.question, "answer": text, "stance": stance}


def _garble(text: str, rng: random.Random) -> str:
    words = text.split()
    kept = [w for w in words if rng.random() > 0.15] or words[:1]
    if len(kept) > 3 and rng.random() < 0.5:
        i = rng.randrange(len(kept) - 1)
        kept.insert(i, kept[i])
    return " ".join(kept)
