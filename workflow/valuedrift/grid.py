"""The study's grid of runs, read from a validated config: the one definition that the workflow's
rules, the tables and `valuedrift plan` share.

A run is a value (`Run`), not a path to parse: one model, one training seed, one SFT set, and for a
preference run an algorithm variant and a preference set. Its folder is `Run.path`:

    <model>/seed-<seed>/sft-<sft set>                          the SFT phase
    <model>/seed-<seed>/sft-<sft set>/<variant>-<pref set>     a preference phase started from it
    <model>/seed-<seed>/sft-<sft set>/reward-<pref set>        the reward model PPO (and GRPO) use

The training seed (`grid.seeds`) is a grid axis of its own: each seed is a whole replicate of the
post-training (SFT, reward model, preference phases), separate from the top-level `seed`, which
draws the world, the datasets and the probes' samples. A variant is a named entry of `algorithms`
(e.g. `simpo_gamma05: {algorithm: simpo, simpo_gamma: 0.5}`); its `algorithm` (by default its
name) is the method, the TRL trainer it runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from valuedrift.training.trainers import ALGORITHMS

PHASES = ("sft", "preference", "reward")


@dataclass(frozen=True)
class Run:
    model: str
    seed: int
    sft_data: str
    algorithm: str = "sft"       # "sft", "reward", or a variant name of `algorithms`
    pref_data: str = ""
    # the entry of `external_runs` whose checkpoints this run's snapshots are ("": trained here)
    external: str = field(default="", compare=False)

    @property
    def phase(self) -> str:
        return self.algorithm if self.algorithm in ("sft", "reward") else "preference"

    @property
    def path(self) -> str:
        base = f"{self.model}/seed-{self.seed}/sft-{self.sft_data}"
        return base if self.phase == "sft" else f"{base}/{self.algorithm}-{self.pref_data}"

    @property
    def start(self) -> "Run":
        """The SFT run a preference or reward run starts from (an SFT run starts from its model)."""
        return Run(self.model, self.seed, self.sft_data)

    def tags(self, config: dict) -> dict:
        """The identifiers every row of this run's tables carries."""
        return {"model": self.model, "seed": self.seed, "sft_data": self.sft_data, "algorithm": self.algorithm,
                "method": method(config, self.algorithm), "pref_data": self.pref_data, "phase": self.phase}

    @classmethod
    def from_path(cls, path: str) -> "Run":
        match = _PATH.fullmatch(path)
        if not match:
            raise ValueError(f"{path!r} is not a run folder (<model>/seed-<n>/sft-<set>[/<algorithm>-<set>])")
        model, seed, sft_data, algorithm, pref_data = match.groups()
        return cls(model, int(seed), sft_data, algorithm or "sft", pref_data or "")


_PATH = re.compile(r"([a-z0-9_]+)/seed-([0-9]+)/sft-([a-z0-9_]+)(?:/([a-z0-9_]+)-([a-z0-9_]+))?")


def method(config: dict, variant: str) -> str:
    """The TRL algorithm a variant runs: its `algorithm` key, or its own name."""
    if variant in ("sft", "reward"):
        return variant
    return config["algorithms"][variant].get("algorithm", variant)


def trainer_settings(config: dict, variant: str) -> dict:
    """A variant's fields of its TRL config class (its entry without `algorithm`)."""
    return {k: v for k, v in config["algorithms"][variant].items() if k != "algorithm"}


def grid(config: dict) -> dict[str, list]:
    """Each grid axis narrowed by `filter` (an empty filter list keeps the whole axis)."""
    return {axis: [n for n in names if not config["filter"].get(axis) or n in config["filter"][axis]]
            for axis, names in config["grid"].items()}


def skipped_sft(config: dict) -> list[str]:
    """SFT sets marked `skip`: no SFT phase; the preference runs start from the model itself."""
    return [name for name, spec in config["sft_datasets"].items() if spec.get("skip")]


def snapshot_fractions(config: dict) -> list[float]:
    """The fractions of a phase at which snapshots 1..K are taken (0 is the start): K evenly
    spaced, or the list `snapshots_per_phase` gives (denser early, to time an early drift)."""
    spec = config["snapshots_per_phase"]
    if isinstance(spec, list):
        return [float(f) for f in spec]
    return [k / spec for k in range(1, spec + 1)]


def sft_runs(config: dict) -> list[Run]:
    axes = grid(config)
    return [Run(m, s, d) for m in axes["models"] for s in axes["seeds"] for d in axes["sft_datasets"]]


def runs(config: dict) -> list[Run]:
    """Every probed run: SFT runs (but skipped ones), then the preference runs from each, then
    the runs trained elsewhere (`external_runs`)."""
    axes, skipped = grid(config), skipped_sft(config)
    out = []
    for sft in sft_runs(config):
        if sft.sft_data not in skipped:
            out.append(sft)
        out += [Run(sft.model, sft.seed, sft.sft_data, a, p)
                for a in axes["algorithms"] for p in axes["preference_datasets"]]
    return out + external_runs(config)


EXTERNAL_AXES = {"models": "model", "seeds": "seed", "sft_datasets": "sft_data", "algorithms": "algorithm",
                 "preference_datasets": "pref_data"}


def external_run(name: str, spec: dict) -> Run:
    """The run an `external_runs` entry stands for: its labels (the entry's name is its model unless
    it names one), so its rows sit beside the grid's in every table and figure."""
    return Run(spec.get("model", name), spec.get("seed", 0), spec.get("sft_data", "none"),
               spec.get("algorithm", "sft"), spec.get("pref_data", ""), external=name)


def external_runs(config: dict) -> list[Run]:
    """The runs of `external_runs` that pass `filter` (an empty filter list keeps every label)."""
    out = []
    for name, spec in (config.get("external_runs") or {}).items():
        run = external_run(name, spec)
        if all(not config["filter"].get(axis) or getattr(run, attr) in config["filter"][axis]
               for axis, attr in EXTERNAL_AXES.items() if not (attr == "pref_data" and run.phase == "sft")):
            out.append(run)
    return out


def uses_reward_model(config: dict, variant: str) -> bool:
    """PPO always; GRPO and RLOO unless `online_reward: judge`."""
    name = method(config, variant)
    return ALGORITHMS[name].reward and (name == "ppo" or config["online_reward"] == "reward_model")


def reward_models(config: dict) -> list[Run]:
    """The reward-model runs the grid trains, one per (model, seed, SFT set, preference set) that needs one."""
    axes = grid(config)
    if not any(uses_reward_model(config, a) for a in axes["algorithms"]):
        return []
    return [Run(s.model, s.seed, s.sft_data, "reward", p) for s in sft_runs(config)
            for p in axes["preference_datasets"]]
