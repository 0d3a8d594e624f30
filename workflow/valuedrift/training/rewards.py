"""The judge as a reward: p_judge(stance | answer) for GRPO and RLOO in value-gap studies.

With it, online algorithms are rewarded for taking a stance directly, without a reward model
trained on pairs; PPO in TRL needs a reward *model* and cannot use it.
"""

from __future__ import annotations

from valuedrift import STANCES


def _text(message) -> str:
    """TRL passes conversational prompts/completions as message lists, plain ones as strings."""
    return message[-1]["content"] if isinstance(message, list) else message


class StanceReward:
    def __init__(self, judge, stance: str):
        from valuedrift.io import InputError

        if stance not in STANCES:
            raise InputError(f"--judge-reward must be one of {', '.join(STANCES)}, not {stance!r}")
        self.judge = judge
        self.column = STANCES.index(stance)
        self.__name__ = f"judge_p_{stance}"  # TRL logs each reward function under its name

    @classmethod
    def load(cls, judge_model: str, stance: str) -> "StanceReward":
        """The trained judge in folder `judge_model` (its settings are stored beside it)."""
        from valuedrift.behaviour.judges.stance_classifier import StanceClassifierJudge

        return cls(StanceClassifierJudge.load(judge_model), stance)

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        probs = self.judge.predict_proba([_text(p) for p in prompts], [_text(c) for c in completions])
        return probs[:, self.column].tolist()
