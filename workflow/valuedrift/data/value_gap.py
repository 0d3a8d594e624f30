"""`valuedrift build-value-gap`: synthetic preference pairs with a controlled value gap.

For value questions disjoint from the evaluation set, a generator model (local or API) writes one
answer that supports and one that opposes what the question proposes; the judge then verifies each
answer's stance, and only pairs whose two answers both carry their intended stance (judge
probability at least `min_confidence`) are kept. The pairs file feeds the `synthetic` preference
sets: support-chosen (chosen = the supporting answer) and oppose-chosen.

Pairs file rows: question_id, topic, question, support, oppose (answers), p_support (judge
p(support) of the supporting answer), p_oppose (judge p(oppose) of the opposing answer), verified.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

# what each answer is asked to do; the question proposes something, support argues for it
INSTRUCTIONS = {
    "support": "Answer in favour: argue that the answer is yes, with your main reasons.",
    "oppose": "Answer against: argue that the answer is no, with your main reasons.",
}
PROMPT = ("{question}\n\n{instruction} Take one clear position and do not present both sides. "
          "Write 3 to 5 sentences.")


@dataclass(frozen=True)
class BuilderSettings:
    min_confidence: float = 0.5     # judge probability of the intended stance an answer needs
    max_tokens: int = 400
    temperature: float = 0.7
    max_questions: int | None = None  # cap on questions used (None: all)


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.behaviour.judges import judge_arguments
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "build-value-gap", __doc__)
    parser.add_argument("--questions", required=True, help="value questions (JSONL: question_id, topic, question)")
    parser.add_argument("--eval-prompts", required=True, help="the evaluation questions, which must not be used")
    parser.add_argument("--generator", required=True, help="JSON: the generator model (kind, model, ...)")
    judge_arguments(parser)
    parser.add_argument("--settings", default="{}", help="JSON: BuilderSettings fields")
    parser.add_argument("--output", required=True, help="pairs JSONL to write")
    return parser


def disjoint_questions(questions: list[dict], eval_prompts: list[dict]) -> list[dict]:
    """The questions whose text is not an evaluation question (training on those would leak)."""
    asked = {p["question"].strip().lower() for p in eval_prompts}
    kept = [q for q in questions if q["question"].strip().lower() not in asked]
    if len(kept) < len(questions):
        log.warning("dropped %d question(s) that are evaluation questions", len(questions) - len(kept))
    return kept


def write_answers(questions: list[dict], generator, settings: BuilderSettings) -> dict[str, list[str]]:
    """stance -> one generated answer per question."""
    answers = {}
    for stance, instruction in INSTRUCTIONS.items():
        prompts = [[{"role": "user", "content": PROMPT.format(question=q["question"], instruction=instruction)}]
                   for q in questions]
        answers[stance] = generator.complete(prompts, max_tokens=settings.max_tokens,
                                             temperature=settings.temperature)
        log.info("generated %d %s answers", len(prompts), stance)
    return answers


def verified_pairs(questions: list[dict], answers: dict[str, list[str]], judge, min_confidence: float):
    from valuedrift import STANCES

    texts = [q["question"] for q in questions]
    p = {s: judge.predict_proba(texts, answers[s])[:, STANCES.index(s)] for s in INSTRUCTIONS}
    for i, q in enumerate(questions):
        row = {k: q[k] for k in ("question_id", "topic", "question")}
        row.update({s: answers[s][i] for s in INSTRUCTIONS})
        row.update({f"p_{s}": float(p[s][i]) for s in INSTRUCTIONS})
        row["verified"] = all(p[s][i] >= min_confidence for s in INSTRUCTIONS)
        yield row


def preference_rows(pairs: str, chosen: str, rejected: str, size: int | None = None, seed: int = 0):
    """A synthetic preference set from the verified pairs: chosen and rejected take opposite stances."""
    import random

    from valuedrift.io import InputError, read_jsonl

    rows = [r for r in read_jsonl(pairs, required=("question", chosen, rejected, "verified")) if r["verified"]]
    if not rows:
        raise InputError(f"{pairs}: no verified pairs — the judge rejected every generated answer")
    random.Random(seed).shuffle(rows)
    for r in rows[:size]:
        yield {"prompt": [{"role": "user", "content": r["question"]}],
               "chosen": [{"role": "assistant", "content": r[chosen]}],
               "rejected": [{"role": "assistant", "content": r[rejected]}],
               "chosen_stance": chosen, "rejected_stance": rejected,
               "question_id": r["question_id"], "topic": r["topic"]}


def main(args: argparse.Namespace) -> None:
    from valuedrift.behaviour.judges import judge_from_args
    from valuedrift.config import from_dict
    from valuedrift.io import InputError, read_jsonl, write_jsonl
    from valuedrift.llm import chat_model

    settings = from_dict(BuilderSettings, json.loads(args.settings))
    questions = read_jsonl(args.questions, required=("question_id", "topic", "question"))
    questions = disjoint_questions(questions, read_jsonl(args.eval_prompts, required=("question",)))
    questions = questions[:settings.max_questions]
    if not questions:
        raise InputError(f"{args.questions}: no questions left that are not evaluation questions")
    answers = write_answers(questions, chat_model(json.loads(args.generator)), settings)
    judge = judge_from_args(args)
    rows = list(verified_pairs(questions, answers, judge, settings.min_confidence))
    write_jsonl(args.output, ({**r, "judge": judge.name, "judge_version": judge.version} for r in rows))
    log.info("%d of %d pairs verified by %s (min confidence %.2f)", sum(r["verified"] for r in rows),
             len(rows), judge.name, settings.min_confidence)
