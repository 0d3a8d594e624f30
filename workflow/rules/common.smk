# Config validation, the run grid and the small input functions every rule file uses.
import json
import os
import re
import shlex
from pathlib import Path

from valuedrift.behaviour.judges import TRAINED
from valuedrift import grid
from valuedrift.config import (chosen_stance, dictionary_settings, feature_run, probe_pairs_spec,
                               representation_run, validate_config, workflow_file)
from valuedrift.llm.api import TRANSPORT_ENV, split_transport
from valuedrift.training.external import checkpoint_folders
from valuedrift.training.trainers import ALGORITHMS

# experiments name the workflow's own DeepSpeed files relative to it: found from any --directory
config["deepspeed"] = workflow_file(config.get("deepspeed"), workflow.basedir)
validate_config(config)

GRID = grid.grid(config)  # narrowed by the filter
FRACTIONS = grid.snapshot_fractions(config)  # of snapshots 1..K; 0 is each phase's start
K = len(FRACTIONS)
SNAPSHOTS = list(range(K + 1))
R = "results"  # every output lives under results/
VARIANTS = "|".join(config["algorithms"]) or "(?!)"  # "(?!)": no variant matches an empty grid


wildcard_constraints:
    model="[a-z0-9_]+",
    seed="[0-9]+",
    sft_data="[a-z0-9_]+",
    pref_data="[a-z0-9_]+",
    algorithm=VARIANTS,
    k="[0-9]+",
    judge="[a-z0-9_]+",
    probe_set="[a-z0-9_]+",
    # a run is an SFT phase, or a preference phase started from one (reward models are not probed)
    run=f"seed-[0-9]+/sft-[a-z0-9_]+(/({VARIANTS})-[a-z0-9_]+)?",


def as_json(value):
    """Settings travel to the CLI as one JSON argument (shell-quoted with :q in the rule)."""
    return json.dumps(value, sort_keys=True)


SKIPPED_SFT = grid.skipped_sft(config)
# runs trained elsewhere, by folder: their checkpoints become the snapshots (external.smk)
EXTERNAL_RUNS = {run.path: run.external for run in grid.external_runs(config)}


def runs():
    """The folders of every probed run (see valuedrift.grid.Run)."""
    return [run.path for run in grid.runs(config)]


def external_checkpoints(name):
    """The checkpoint folders an `external_runs` entry names (the import skips incomplete ones)."""
    return [str(folder) for folder in checkpoint_folders(config["external_runs"][name])]


def run_of(wildcards):
    return grid.Run.from_path(f"{wildcards.model}/{wildcards.run}")


def run_tags(wildcards):
    """The identifiers every probe row carries."""
    return as_json(run_of(wildcards).tags(config))


def method_of(wildcards):
    """The TRL algorithm of a preference run's variant."""
    return grid.method(config, wildcards.algorithm)


def model_path(name_or_path):
    """A model named in `models` (its base folder or hub id), or a hub id / folder as given."""
    spec = config["models"].get(name_or_path)
    if spec is None:
        return name_or_path
    return f"{R}/{name_or_path}/base" if "miniature" in spec else spec["path"]


def snapshot_dirs(run, keep=None):
    """The snapshot folders 0..K a phase writes. With `storage.keep_snapshots: false` they are
    temporary: Snakemake deletes each once every job that reads it is done."""
    keep = config["storage"]["keep_snapshots"] if keep is None else keep
    return [directory(f"{R}/{run}/snapshots/{k}") if keep else temp(directory(f"{R}/{run}/snapshots/{k}"))
            for k in SNAPSHOTS]


def adapter_base(wildcards):
    """LoRA snapshots are adapters over their phase's start (the SFT result): jobs that load them
    read that folder too, which also keeps it from being deleted before them."""
    run = run_of(wildcards)
    if run.phase == "preference" and config["lora"] and ALGORITHMS[grid.method(config, run.algorithm)].lora:
        return [f"{R}/{run.start.path}/snapshots/{K}"]
    return []


def start_model(wildcards):
    """The SFT phase starts from the base model: a folder built here, or a hub id / path."""
    return model_path(wildcards.model)


def chat_template(wildcards):
    """The tokenizer whose chat template the model takes (`models.<name>.chat_template`), or None."""
    return config["models"].get(wildcards.model, {}).get("chat_template")


def sft_settings(wildcards):
    """The SFT config, with the model's own chat template as TRL's `chat_template_path`."""
    template = chat_template(wildcards)
    return as_json({**config["sft"], **({"chat_template_path": template} if template else {})})


def built_here(name):
    """[the base folder] of a model of `models` that the pipeline builds (miniature); else []."""
    spec = config["models"].get(name)
    return [f"{R}/{name}/base"] if spec and "miniature" in spec else []


def base_model_input(wildcards):
    return built_here(wildcards.model)


def reward_inputs(wildcards):
    """PPO (and GRPO/RLOO by default) need the reward model of their SFT model and preference set;
    GRPO/RLOO with `online_reward: judge` need the judge instead."""
    a = wildcards.algorithm
    if grid.uses_reward_model(config, a):
        run = grid.Run(wildcards.model, int(wildcards.seed), wildcards.sft_data, "reward", wildcards.pref_data)
        return {"reward_model": f"{R}/{run.path}/snapshots/{K}"}
    if ALGORITHMS[grid.method(config, a)].reward:
        return {"judge": f"{R}/judge/{config['judge']['name']}"}
    return {}


def reward_args(wildcards, input):
    """The reward flags of `valuedrift train` for this run."""
    if "reward_model" in input.keys():
        return f"--reward-model {shlex.quote(input.reward_model)}"
    if "judge" in input.keys():
        chosen = chosen_stance(config["preference_datasets"][wildcards.pref_data], config["preference_datasets"])
        return f"--judge-reward {chosen} --judge-model {shlex.quote(input.judge)}"
    return ""


def resources_of(kind, wildcards=None):
    """Cores, memory, time and GPUs of a kind of job, with the model's own overrides."""
    base = config["resources"][kind]
    if wildcards is None or "model" not in wildcards.keys():
        return base
    # a model label of an external run has no entry in `models`
    return {**base, **config["models"].get(wildcards.model, {}).get("resources", {}).get(kind, {})}


def job_resources(kind):
    """The `resources:` of a rule of this kind, as callables so per-model overrides apply. The
    runtime grows with each retry (attempt 2 asks for twice the time): a job killed at its time
    limit would otherwise be killed again at the same point."""
    return {
        "mem_mb": lambda w: resources_of(kind, w)["mem_mb"],
        "runtime": lambda w, attempt: resources_of(kind, w)["runtime"] * attempt,
        "gpu": lambda w: resources_of(kind, w)["gpu"],
    }


def job_threads(kind):
    return lambda w: resources_of(kind, w)["cpus"]


def launcher(wildcards):
    """How a training job starts: one process, or `accelerate launch` with one process per GPU
    (sharded with DeepSpeed when the config names a DeepSpeed file)."""
    gpus = resources_of("train", wildcards)["gpu"]
    deepspeed = config["deepspeed"]
    if gpus <= 1 and not deepspeed:
        return "valuedrift"
    if deepspeed:
        mode = f"--use_deepspeed --deepspeed_config_file {shlex.quote(deepspeed)}"
    else:
        mode = "--multi_gpu"
    return f"accelerate launch --num_processes {max(gpus, 1)} {mode} -m valuedrift"


def llm_entries():
    """Every LLM of the config by its place in it: judges, the V-PRISM rephraser, the value-gap generator."""
    vprism = config["eval_prompts"].get("vprism") or {}
    entries = {f"judges.{name}": spec for name, spec in config["judges"].items()}
    entries["eval_prompts.vprism.rephraser"] = vprism.get("rephraser")
    entries["value_gap_builder.generator"] = (config.get("value_gap_builder") or {}).get("generator")
    return {ref: spec for ref, spec in entries.items() if spec}


def api_spec(ref):
    """The LLM entry at `ref` as a job's params take it: an API model's transport (endpoint, key
    variable, concurrency, retries, cache, batch mode) left out, so that changing it reruns nothing
    (valuedrift.llm.api.TRANSPORT); the jobs read it from the environment, set below."""
    return split_transport(llm_entries()[ref], ref)[0]


# on every parse: on the submitting host and inside every cluster job
os.environ[TRANSPORT_ENV] = json.dumps({ref: split_transport(spec, ref)[1] for ref, spec in llm_entries().items()},
                                       sort_keys=True)


def judge_settings(name):
    """The judge's entry under `judges:`, with a config model name as encoder resolved to its path."""
    spec = dict(api_spec(f"judges.{name}"))
    if "encoder" in spec:
        spec["encoder"] = model_path(spec["encoder"])
    return spec


def judge_inputs(name):
    """What judging with `name` needs: its trained folder, or nothing (LLM judges)."""
    return {"judge_model": f"{R}/judge/{name}"} if config["judges"][name]["kind"] in TRAINED else {}


def judge_args(name):
    """The judge flags of `valuedrift judge` / `judge-pairs` / `build-value-gap` for judge `name`."""

    def args(wildcards, input):
        out = f"--judge {name} --judge-settings {shlex.quote(as_json(judge_settings(name)))}"
        return out + (f" --judge-model {shlex.quote(input.judge_model)}" if "judge_model" in input.keys() else "")

    return args


def encoder_input(wildcards):
    """A trained judge on embedding features needs its encoder; a miniature one is built here."""
    return built_here(config["judges"][wildcards.judge].get("encoder"))


def derived_source_input(wildcards):
    """A derived preference set relabels the pairs of the set it names."""
    derived = config["preference_datasets"][wildcards.pref_data].get("derived")
    return [f"{R}/data/preference/{derived['from']}.jsonl"] if derived else []


def synthetic_pairs_input(wildcards):
    return [f"{R}/data/value_gap_pairs.jsonl"] if "synthetic" in config["preference_datasets"][wildcards.pref_data] else []


def value_questions_input(wildcards):
    """The value questions the synthetic value-gap builder answers (never evaluation questions)."""
    questions = config["value_gap_builder"]["questions"]
    return {"miniature": f"{R}/data/value_questions.jsonl", "vprism_heldout": f"{R}/data/vprism_heldout.jsonl"}.get(
        questions, questions)


def labelled_answers():
    return config["judge"].get("labelled") or f"{R}/data/judge/test.jsonl"


def api_caches():
    """The response caches of every API model (judges, the V-PRISM rephraser, the value-gap generator)."""
    return sorted({m["cache"] for m in llm_entries().values() if m["kind"] == "openai_api" and m.get("cache")})


# each job writes its answers to a shard beside its cache (safe on NFS); finished shards are folded
# into the cache's main file before a run starts and after it ends (valuedrift.llm.cache)
API_CACHES = api_caches()


JUDGE = config["judge"]["name"]
COMPARED_JUDGES = config["judge"].get("compare") or [JUDGE]
PROBE_JUDGES = list(dict.fromkeys([JUDGE, *COMPARED_JUDGES]))  # every judge labels every run's answers
# judges cheap enough to run inside the generate job: trained stance classifiers
LOCAL_JUDGING = all(config["judges"][j]["kind"] in TRAINED for j in PROBE_JUDGES)
# the trained judges' folders, as named inputs of the job that judges
JUDGE_MODELS = {f"judge_model_{j}": f for j in PROBE_JUDGES for f in judge_inputs(j).values()}
# a run's stance files, judge by judge
RUN_STANCES = [f"{R}/{{model}}/{{run}}/behaviour/{k}/stances/{j}.jsonl" for j in PROBE_JUDGES for k in SNAPSHOTS]


def judge_specs(input):
    """The probe judges as `valuedrift judge --judges` (and `generate --judges`) take them."""
    return as_json([{"name": j, "settings": judge_settings(j), "model_dir": input.get(f"judge_model_{j}")}
                    for j in PROBE_JUDGES])


def stance_files(judge):
    return [f"{R}/{run}/behaviour/{k}/stances/{judge}.jsonl" for run in runs() for k in SNAPSHOTS]


STANCE_FILES = stance_files(JUDGE)
# the representation probe's held-out pair sets, by name
PROBE_SETS = list(config["probe_pairs"])
# the runs whose representations are probed: every run, or those of the seeds `representation.seeds` names
REPRESENTATION_RUNS = [run for run in grid.runs(config) if representation_run(config, run)]
# the preference runs whose start and end get sparse dictionaries (`dictionaries`; none if null)
FEATURE_RUNS = [run for run in REPRESENTATION_RUNS if feature_run(config, run)]
# every phase that trains (not a skipped SFT): its trainer_state.json feeds the training-health report
TRAINED_RUNS = [run for run in grid.runs(config) + grid.reward_models(config)
                if not (run.phase == "sft" and run.sft_data in SKIPPED_SFT)]
# the value gap is measured on the grid's preference sets; an SFT-only grid has none to measure
VALUE_GAP_FILES = [f"{R}/report/value_gap.csv", f"{R}/report/value_gap.png"] if GRID["preference_datasets"] else []
DIAGNOSTIC_FILES = VALUE_GAP_FILES + [
    f"{R}/report/judge_calibration.csv",
    f"{R}/report/judge_agreement.csv",
]
REPRESENTATION_FILES = [
    f"{R}/report/representation_layers.csv",
    f"{R}/report/representation_summary.csv",
    f"{R}/report/representation_auroc_by_layer.png",
    f"{R}/report/representation_layer_changes.png",
    f"{R}/report/representation_peak_change.png",
    f"{R}/report/representation_cka.png",
] + ([f"{R}/report/representation_features.csv", f"{R}/report/representation_features.png"] if FEATURE_RUNS else [])
REPORT_FILES = [
    f"{R}/report/drift_by_seed.csv",
    f"{R}/report/drift_by_snapshot.csv",
    f"{R}/report/drift_vs_kl.png",
    f"{R}/report/training_health.png",
    f"{R}/report/training_health_summary.csv",
    *([f"{R}/report/judge_sensitivity.csv"] if len(PROBE_JUDGES) > 1 else []),
    f"{R}/report/trajectories.png",
    f"{R}/report/trajectories_by_topic.png",
    f"{R}/report/drift_heatmap.png",
    f"{R}/report/drift_by_algorithm.png",
    f"{R}/report/drift.csv",
    f"{R}/report/drift_summary.csv",
]
