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


def turn_suffix_ids(tokenizer) -> list[int]:
    """The tokens a chat template writes after an answer's end-of-turn token (EOS): "\\n" after the
    miniature models' <|end|> (and Qwen's <|im_end|>), none after Llama 3's <|eot_id|>."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                                         tokenize=False)
    end = text.rfind(tokenizer.eos_token)
    suffix = text[end + len(tokenizer.eos_token):] if end >= 0 else ""
    return tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []


def scored_at_turn_end(reward_model, tokenizer):
    """PPO's reward model, scoring each answer where TRL's RewardTrainer trained it to score.

    RewardTrainer renders a pair with the chat template and scores the last token of the text,
    which comes after EOS when the template writes more there ("<|end|>\\n"). TRL's PPO loop scores
    a sampled answer at its own last token, the EOS, where the reward model was never trained: on
    the miniature world it tells chosen from rejected answers apart by 0.08 there and by 3 one
    token later, so PPO's reward was mostly noise. This wraps the reward model so that every
    answer that ended at EOS is scored with the template's suffix after it, as in training; an
    answer cut off before EOS is scored where it stops, as before. With no suffix (a template that
    ends the turn at EOS) the reward model is returned as it is."""
    from types import SimpleNamespace

    import torch

    suffix_ids = turn_suffix_ids(tokenizer)
    if not suffix_ids:
        return reward_model

    class SuffixedBackbone(torch.nn.Module):
        """The reward model's backbone, run with the suffix after each ended answer; the hidden
        state of the suffix's last token is returned at the answer's last position, where TRL's
        `get_reward` reads the score."""

        def __init__(self, backbone):
            super().__init__()
            self.inner = backbone
            self.register_buffer("suffix", torch.tensor(suffix_ids, dtype=torch.long), persistent=False)

        def forward(self, input_ids, attention_mask, position_ids=None, **kwargs):
            batch, length = input_ids.shape
            n = len(self.suffix)
            rows = torch.arange(batch, device=input_ids.device)
            mask = attention_mask.bool()
            last = (mask.long() * torch.arange(length, device=input_ids.device)).argmax(-1)
            ended = input_ids[rows, last] == tokenizer.eos_token_id
            ids = torch.cat([input_ids, input_ids.new_full((batch, n), tokenizer.pad_token_id or 0)], 1)
            mask = torch.cat([mask, mask.new_zeros(batch, n)], 1)
            cols = (last[:, None] + 1 + torch.arange(n, device=ids.device))[ended]
            ids[rows[ended][:, None], cols] = self.suffix
            mask[rows[ended][:, None], cols] = True
            positions = mask.long().cumsum(1) - mask.long()  # as TRL's get_reward numbers them
            hidden = self.inner(input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs).hidden_states[-1]
            read = hidden[:, :length].clone()
            read[rows, last] = hidden[rows, torch.where(ended, last + n, last)]
            return SimpleNamespace(hidden_states=(read,))

    class TurnEndReward(torch.nn.Module):
        base_model_prefix = "backbone"  # what TRL's get_reward looks the backbone up by

        def __init__(self):
            super().__init__()
            self.backbone = SuffixedBackbone(getattr(reward_model, reward_model.base_model_prefix))
            self.score = reward_model.score
            self.config = reward_model.config

    return TurnEndReward()
