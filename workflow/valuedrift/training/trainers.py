"""The one place that maps algorithm names to TRL config and trainer classes.

Trainer settings in config.yaml are exactly the fields of the TRL config class named here, so a
recipe reads like TRL's own documentation; an unknown field is an error naming the class.
`fixed` holds the settings that make an algorithm what it is (SimPO is TRL's CPO trainer with the
SimPO loss and no NLL term); a config that contradicts them is refused.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import os
from dataclasses import dataclass, field
from typing import Any

from valuedrift.io import InputError


@dataclass(frozen=True)
class Algorithm:
    config_class: str        # "module:Class"
    trainer_class: str
    # the training rows it takes (see valuedrift.training.data): sft, preference, unpaired,
    # prompt (text prompts for online sampling) or prompt_ids (tokenized prompts, for PPO)
    data: str
    fixed: dict[str, Any] = field(default_factory=dict)
    reference_model: bool = False   # a frozen copy of the starting policy
    reward: bool = False            # scores sampled answers: a trained reward model (or the judge)
    value_model: bool = False       # PPO's critic, initialized from the reward model
    sequence_classifier: bool = False  # trains a scalar head (the reward model) instead of an LM
    resumable: bool = True          # TRL can resume it from a checkpoint
    lora: bool = False              # may train LoRA adapters instead of all weights (config `lora`)


ALGORITHMS: dict[str, Algorithm] = {
    "sft": Algorithm("trl:SFTConfig", "trl:SFTTrainer", data="sft"),
    "dpo": Algorithm("trl:DPOConfig", "trl:DPOTrainer", data="preference", reference_model=True, lora=True),
    "ipo": Algorithm("trl:DPOConfig", "trl:DPOTrainer", data="preference", fixed={"loss_type": ["ipo"]},
                     reference_model=True, lora=True),
    "simpo": Algorithm("trl.experimental.cpo:CPOConfig", "trl.experimental.cpo:CPOTrainer", data="preference",
                       fixed={"loss_type": "simpo", "cpo_alpha": 0.0}, lora=True),
    "orpo": Algorithm("trl.experimental.orpo:ORPOConfig", "trl.experimental.orpo:ORPOTrainer", data="preference",
                      lora=True),
    "kto": Algorithm("trl:KTOConfig", "trl:KTOTrainer", data="unpaired", reference_model=True, lora=True),
    "grpo": Algorithm("trl:GRPOConfig", "trl:GRPOTrainer", data="prompt", reward=True, lora=True),
    "rloo": Algorithm("trl:RLOOConfig", "trl:RLOOTrainer", data="prompt", reward=True, lora=True),
    # TRL's PPO loop has no resume_from_checkpoint: an interrupted PPO phase starts over; it also
    # trains its value model beside the policy, so it always fine-tunes all weights
    "ppo": Algorithm("trl.experimental.ppo:PPOConfig", "trl.experimental.ppo:PPOTrainer", data="prompt_ids",
                     reference_model=True, reward=True, value_model=True, resumable=False),
    "reward": Algorithm("trl:RewardConfig", "trl:RewardTrainer", data="preference", sequence_classifier=True),
}

PREFERENCE_ALGORITHMS = tuple(a for a in ALGORITHMS if a not in ("sft", "reward"))

# Our defaults where TRL's do not suit every machine; anything in config.yaml overrides them.
# TRL defaults to bf16 and gradient checkpointing; we turn bf16 on only where a GPU has it, and
# checkpointing only when asked (it slows small models and saves nothing on them). transformers 5
# names it `activation_checkpointing`; its old name `gradient_checkpointing` still works but warns.
# Trackers are off here; `valuedrift train --tracking` (the config's `tracking`) turns them on.
BASE_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "activation_checkpointing": False,
    "save_strategy": "no",
    "logging_steps": 1,  # every step: the training-health report reads the curves
    # a progress bar in the job's log (stderr); valuedrift.cli keeps it from redrawing too often there
    "disable_tqdm": False,
    "dataloader_num_workers": 0,
}


def _import(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def spec(algorithm: str) -> Algorithm:
    if algorithm not in ALGORITHMS:
        raise InputError(f"unknown algorithm {algorithm!r}; known: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[algorithm]


def trl_config_fields(algorithm: str) -> set[str]:
    return {f.name for f in dataclasses.fields(_import(spec(algorithm).config_class))}


def make_config(algorithm: str, settings: dict[str, Any], output_dir: str | os.PathLike, seed: int):
    """Build the TRL config for `algorithm` from config.yaml's settings, checking every key."""
    import torch

    algo = spec(algorithm)
    cls = _import(algo.config_class)
    unknown = sorted(set(settings) - trl_config_fields(algorithm))
    if unknown:
        raise InputError(
            f"{algorithm}: unknown trainer setting(s) {', '.join(unknown)}; keys must be fields of "
            f"TRL's {cls.__name__} (see its documentation)"
        )
    clashes = sorted(k for k, v in algo.fixed.items() if k in settings and settings[k] != v)
    if clashes:
        raise InputError(f"{algorithm}: {', '.join(f'{k}={algo.fixed[k]!r}' for k in clashes)} define(s) "
                         f"this algorithm; remove {', '.join(clashes)} from its settings")
    cuda = torch.cuda.is_available()
    kwargs = {**BASE_DEFAULTS, "bf16": cuda and torch.cuda.is_bf16_supported(), "dataloader_pin_memory": cuda}
    kwargs.update(settings)
    kwargs.update(algo.fixed)
    return cls(output_dir=str(output_dir), seed=seed, **kwargs)


@dataclass
class Models:
    """The models one phase needs, loaded by the caller (see valuedrift.training.train)."""

    policy: Any
    tokenizer: Any
    reference: Any = None
    reward: Any = None      # a sequence-classification model, or a callable reward (GRPO/RLOO)
    value: Any = None


def make_trainer(algorithm: str, models: Models, dataset, config, callbacks=(), lora: dict | None = None):
    """The TRL trainer of `algorithm`; with `lora` (LoraConfig fields) it trains adapters only, and
    its snapshots are adapters that `from_pretrained` loads over the starting model."""
    algo = spec(algorithm)
    kwargs = dict(model=models.policy, args=config, train_dataset=dataset, processing_class=models.tokenizer,
                  callbacks=list(callbacks))
    if lora:
        if not algo.lora:
            raise InputError(f"{algorithm} trains all weights here; set `lora: null` or drop {algorithm}")
        from peft import LoraConfig

        kwargs["peft_config"] = LoraConfig(task_type="CAUSAL_LM", **lora)
    if algo.reference_model:
        kwargs["ref_model"] = models.reference
    if algo.value_model:
        kwargs["value_model"] = models.value
    if algo.reward and algorithm == "ppo":
        from valuedrift.training.rewards import scored_at_turn_end

        kwargs["reward_model"] = scored_at_turn_end(models.reward, models.tokenizer)
    elif algo.reward:
        kwargs["reward_funcs"] = models.reward
        if hasattr(models.reward, "config"):  # a reward model reads text with the policy's tokenizer
            kwargs["reward_processing_classes"] = models.tokenizer
    trainer = _import(algo.trainer_class)(**kwargs)
    if algorithm == "ppo" and trainer.is_deepspeed_enabled:
        # TRL's PPO sets its DeepSpeed engine only after on_train_begin (where snapshot 0 is saved),
        # and its save_model then hands transformers the bare policy as the engine, which fails:
        # snapshots save the policy from the engine's state dict instead
        trainer.deepspeed = trainer.model_wrapped = trainer.model
        trainer.save_model = types.MethodType(save_ppo_policy, trainer)
    return trainer


def save_ppo_policy(trainer, output_dir: str | None = None, _internal_call: bool = False) -> None:
    """The policy of a PPO trainer under DeepSpeed, as a model folder: every process takes part in
    gathering the weights (ZeRO-3 shards them), the main one writes them."""
    state = trainer.accelerator.get_state_dict(trainer.deepspeed)
    if trainer.args.should_save:
        policy = trainer.accelerator.unwrap_model(trainer.deepspeed).policy
        # tied weights (the output layer that reuses the embeddings) are stored once, as a plain save does
        tied = (set(getattr(policy, "all_tied_weights_keys", None) or {})
                if getattr(policy.config, "tie_word_embeddings", False) else set())
        policy.save_pretrained(output_dir, state_dict={k.removeprefix("policy."): v for k, v in state.items()
                                                       if k.startswith("policy.") and k.removeprefix("policy.") not in tied})
        trainer.processing_class.save_pretrained(output_dir)
