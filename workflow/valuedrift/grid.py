"""The study's grid of runs, read from a validated config: the one definition that the workflow's
rules and `valuedrift plan` share.

A run is an SFT phase (`<model>/sft-<set>`) or a preference phase started from one
(`<model>/sft-<set>/<algorithm>-<set>`). Reward models are trained beside the runs that need them
and are not probed.
"""

from __future__ import annotations

from valuedrift.training.trainers import ALGORITHMS


def grid(config: dict) -> dict[str, list[str]]:
    """Each grid axis narrowed by `filter` (an empty filter list keeps the whole axis)."""
    return {axis: [n for n in names if not config["filter"].get(axis) or n in config["filter"][axis]]
            for axis, names in config["grid"].items()}


def skipped_sft(config: dict) -> list[str]:
    """SFT sets marked `skip`: no SFT phase; the preference runs start from the model itself."""
    return [name for name, spec in config["sft_datasets"].items() if spec.get("skip")]


def runs(config: dict) -> list[str]:
    """Every probed run: SFT runs, then the preference runs from each SFT result."""
    axes, skipped = grid(config), skipped_sft(config)
    out = []
    for model in axes["models"]:
        for sft_data in axes["sft_datasets"]:
            if sft_data not in skipped:
                out.append(f"{model}/sft-{sft_data}")
            out += [f"{model}/sft-{sft_data}/{algorithm}-{pref_data}"
                    for algorithm in axes["algorithms"] for pref_data in axes["preference_datasets"]]
    return out


def uses_reward_model(config: dict, algorithm: str) -> bool:
    """PPO always; GRPO and RLOO unless `online_reward: judge`."""
    return ALGORITHMS[algorithm].reward and (algorithm == "ppo" or config["online_reward"] == "reward_model")


def reward_models(config: dict) -> list[str]:
    """The reward-model runs the grid trains, one per (model, SFT set, preference set) that needs one."""
    axes = grid(config)
    if not any(uses_reward_model(config, a) for a in axes["algorithms"]):
        return []
    return [f"{model}/sft-{sft_data}/reward-{pref_data}" for model in axes["models"]
            for sft_data in axes["sft_datasets"] for pref_data in axes["preference_datasets"]]
