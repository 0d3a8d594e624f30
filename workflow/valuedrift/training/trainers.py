"""The one place that maps algorithm names to TRL config and trainer classes.

Trainer settings in config.yaml are exactly the fields of the TRL config class named here, so a
recipe reads like TRL's own documentation; an unknown field is an error naming the class.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Algorithm:
    config_class: str       # "module:Class"
    trainer_class: str
    data: str               # which dataset schema it trains on: "sft" or "preference"
    reference_model: bool   # whether the trainer wants a frozen reference copy of the policy


ALGORITHMS: dict[str, Algorithm] = {
    "sft": Algorithm("trl:SFTConfig", "trl:SFTTrainer", data="sft", reference_model=False),
    "dpo": Algorithm("trl:DPOConfig", "trl:DPOTrainer", data="preference", reference_model=True),
}

# Our defaults where TRL's do not suit every machine; anything in config.yaml overrides them.
# TRL defaults to bf16 and gradient checkpointing; we turn bf16 on only where a GPU has it, and
# checkpointing only when asked (it slows small models and saves nothing on them). transformers 5
# names it `activation_checkpointing`; its old name `gradient_checkpointing` still works but warns.
BASE_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "activation_checkpointing": False,
    "save_strategy": "no",
    "logging_steps": 10,
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
}


def _import(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def trl_config_fields(algorithm: str) -> set[str]:
    return {f.name for f in dataclasses.fields(_import(ALGORITHMS[algorithm].config_class))}


def make_config(algorithm: str, settings: dict[str, Any], output_dir: str | os.PathLike, seed: int):
    """Build the TRL config for `algorithm` from config.yaml's settings, checking every key."""
    import torch

    from valuedrift.io import InputError

    if algorithm not in ALGORITHMS:
        raise InputError(f"unknown algorithm {algorithm!r}; known: {', '.join(sorted(ALGORITHMS))}")
    cls = _import(ALGORITHMS[algorithm].config_class)
    unknown = sorted(set(settings) - trl_config_fields(algorithm))
    if unknown:
        raise InputError(
            f"{algorithm}: unknown trainer setting(s) {', '.join(unknown)}; keys must be fields of "
            f"TRL's {cls.__name__} (see its documentation)"
        )
    cuda = torch.cuda.is_available()
    kwargs = {**BASE_DEFAULTS, "bf16": cuda and torch.cuda.is_bf16_supported(), "dataloader_pin_memory": cuda}
    kwargs.update(settings)
    return cls(output_dir=str(output_dir), seed=seed, **kwargs)


def make_trainer(algorithm: str, model, tokenizer, dataset, config, ref_model=None, callbacks=()):
    spec = ALGORITHMS[algorithm]
    kwargs = dict(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                  callbacks=list(callbacks))
    if spec.reference_model:
        kwargs["ref_model"] = ref_model
    return _import(spec.trainer_class)(**kwargs)


def run_trainer(algorithm: str, model, tokenizer, dataset, settings: dict[str, Any], output_dir, seed: int,
                ref_model=None, callbacks=(), resume: bool = False):
    config = make_config(algorithm, settings, output_dir, seed)
    trainer = make_trainer(algorithm, model, tokenizer, dataset, config, ref_model, callbacks)
    trainer.train(resume_from_checkpoint=resume or None)
    return trainer
