# Config validation, the run grid and the small input functions every rule file uses.
import json
from pathlib import Path

from valuedrift.config import validate_config

validate_config(config)

GRID = config["grid"]
K = config["snapshots_per_phase"]
SNAPSHOTS = list(range(K + 1))
R = "results"  # every output lives under results/


wildcard_constraints:
    model="[a-z0-9_]+",
    sft_data="[a-z0-9_]+",
    pref_data="[a-z0-9_]+",
    algorithm="[a-z0-9]+",
    k="[0-9]+",
    # a run is an SFT phase, or a preference phase started from one
    run="sft-[a-z0-9_]+(/[a-z0-9]+-[a-z0-9_]+)?",


def as_json(value):
    """Settings travel to the CLI as one JSON argument (shell-quoted with :q in the rule)."""
    return json.dumps(value, sort_keys=True)


def runs():
    """Every run of the grid: SFT runs, then the preference runs from each SFT result."""
    out = []
    for model in GRID["models"]:
        for sft_data in GRID["sft_datasets"]:
            out.append(f"{model}/sft-{sft_data}")
            for algorithm in GRID["algorithms"]:
                for pref_data in GRID["preference_datasets"]:
                    out.append(f"{model}/sft-{sft_data}/{algorithm}-{pref_data}")
    return out


def run_tags(wildcards):
    """The identifiers every probe row carries, parsed from the run path."""
    sft, _, pref = wildcards.run.partition("/")
    algorithm, _, pref_data = pref.partition("-")
    return as_json(
        {
            "model": wildcards.model,
            "sft_data": sft.removeprefix("sft-"),
            "algorithm": algorithm or "sft",
            "pref_data": pref_data,
            "phase": "preference" if pref else "sft",
        }
    )


def start_model(wildcards):
    """The SFT phase starts from the base model: a folder built here, or a hub id / path."""
    spec = config["models"][wildcards.model]
    return f"{R}/{wildcards.model}/base" if "miniature" in spec else spec["path"]


def base_model_input(wildcards):
    spec = config["models"][wildcards.model]
    return [f"{R}/{wildcards.model}/base"] if "miniature" in spec else []


def resources_of(kind):
    return config["resources"][kind]


STANCE_FILES = [f"{R}/{run}/behaviour/{k}/stances.jsonl" for run in runs() for k in SNAPSHOTS]
REPORT_FILES = [
    f"{R}/report/trajectories.png",
    f"{R}/report/trajectories_by_topic.png",
    f"{R}/report/drift_heatmap.png",
    f"{R}/report/drift.csv",
]
