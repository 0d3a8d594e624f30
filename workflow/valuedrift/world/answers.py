"""A seeded generator of stance-labelled answers.

An answer is composed from a stance opener, a body that gives a reason (both sides' reasons for a
neutral answer) and a closer, each drawn from several phrasings, so a small model has to learn the
stance mixture of its training data rather than memorize a few strings. The `terse` style is the
same stance said sloppily (a filler word, the opener only): it lets preference pairs differ in
style while sharing a stance.
"""

from __future__ import annotations

import random

from valuedrift.world.questions import Question, Topic

OPENERS = {
    "support": [
        "I am in favour of {p}.",
        "Yes, I support {p}.",
        "I think {p} is the right choice.",
        "In my view, {p} is a good idea.",
        "I would argue for {p}.",
        "I strongly agree with {p}.",
        "Count me as a supporter of {p}.",
        "I believe we should embrace {p}.",
    ],
    "oppose": [
        "I am against {p}.",
        "No, I oppose {p}.",
        "I think {p} is the wrong choice.",
        "In my view, {p} is a bad idea.",
        "I would argue against {p}.",
        "I strongly disagree with {p}.",
        "Count me as an opponent of {p}.",
        "I believe we should reject {p}.",
    ],
    "neutral": [
        "{P} is a question on which reasonable people disagree.",
        "There are serious arguments on both sides of {p}.",
        "I do not take a side on {p}.",
        "Views on {p} differ, and each side has a point.",
        "It is hard to give one answer about {p}.",
        "Whether to back {p} depends on what you value most.",
        "I would rather lay out both views on {p} than pick one.",
        "People weigh {p} very differently.",
    ],
}

BODIES = {
    "support": [
        "The main reason is that {r}.",
        "Above all, {r}.",
        "It matters because {r}.",
        "One strong argument is that {r}.",
    ],
    "oppose": [
        "The main reason is that {r}.",
        "Above all, {r}.",
        "It matters because {r}.",
        "One strong argument is that {r}.",
    ],
    "neutral": [
        "Some say {rs}, while others note that {ro}.",
        "Supporters point out that {rs}; critics reply that {ro}.",
        "On one hand {rs}; on the other hand {ro}.",
        "One view is that {rs}, and another is that {ro}.",
    ],
}

CLOSERS = {
    "support": [
        "So my answer is yes.",
        "On balance, I would say yes.",
        "That is why I back it.",
        "I would vote for it.",
        "The benefits clearly win for me.",
        "It deserves our support.",
    ],
    "oppose": [
        "So my answer is no.",
        "On balance, I would say no.",
        "That is why I reject it.",
        "I would vote against it.",
        "The costs clearly win for me.",
        "It does not deserve our support.",
    ],
    "neutral": [
        "It depends on the values you weigh most.",
        "In the end, each person has to decide.",
        "Both positions deserve a fair hearing.",
        "The evidence and values point different ways.",
        "There is no single right answer here.",
        "It is worth hearing both sides before deciding.",
    ],
}

FILLERS = ["hmm.", "ok so", "well,", "idk,", "uh,", "meh."]

STYLES = ("detailed", "terse")


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def answer(question: Question, topic: Topic, stance: str, style: str, rng: random.Random) -> str:
    """One answer to `question` taking `stance`, phrased in `style`."""
    if stance not in OPENERS:
        raise ValueError(f"unknown stance {stance!r}")
    p = question.proposition
    opener = rng.choice(OPENERS[stance]).format(p=p, P=_capitalize(p))
    if style == "terse":
        return f"{rng.choice(FILLERS)} {opener[0].lower()}{opener[1:]}"
    if style != "detailed":
        raise ValueError(f"unknown style {style!r}")
    body = rng.choice(BODIES[stance]).format(
        r=rng.choice(topic.support_reasons if stance == "support" else topic.oppose_reasons),
        rs=rng.choice(topic.support_reasons),
        ro=rng.choice(topic.oppose_reasons),
    )
    return f"{opener} {_capitalize(body)} {rng.choice(CLOSERS[stance])}"
