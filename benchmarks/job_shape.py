"""Job shape: what the workflow's jobs spend beyond the work they exist for, one section each.

    python benchmarks/job_shape.py [--only training|probes] [--repeats 3] [--scratch DIR]

training: the default study's DPO job (config.yaml's `algorithms.dpo`, its snapshots, the first
training seed, one thread), started as `valuedrift train` the way workflow/rules/train.smk starts
it, against the bare TRL script a user would write for the same training: same SFT start, same
preference rows, same DPOConfig and seed, no snapshots, no checkpoints. Both run as fresh
processes, alternating, `--repeats` times each; prints the wall-time medians, their ratio, and
each side's final training loss (equal when both trained the same way).

probes: the behaviour probe (answers and their stances, by every probe judge) of 4 finished runs
of the default study (README command 1 first), in the old shape, a generate job and a judge job
per snapshot, against the workflow's shape, one job per run that generates and judges; two jobs
at a time, as `snakemake --cores 2` runs them. Prints jobs, job-seconds and wall time of each.

The jobs' inputs (the miniature world's data, the tiny base model and its SFT result) are built
once with the workflow's own commands and kept in the scratch folder (default:
valuedrift-job-shape in the system's temporary folder; about 10 minutes on 2 cores the first
time), so reruns time only the jobs. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from valuedrift.grid import snapshot_fractions

ROOT = Path(__file__).resolve().parent.parent
# the entry point the workflow's rules call, installed beside this Python
_SCRIPT = Path(sys.executable).parent / "valuedrift"
VALUEDRIFT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "valuedrift"]


def default_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def as_json(value) -> str:
    """As the workflow passes settings (workflow/rules/common.smk)."""
    return json.dumps(value, sort_keys=True)


def run(cmd: list[str], log: Path) -> float:
    """Run one job as the workflow does (output to a log); its wall time in seconds."""
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({done.returncode}); see {log}")
    return seconds


def build_once(target: Path, cmd: list[str], log: Path) -> None:
    """Build `target` with `cmd` unless an earlier run of this script did."""
    if target.exists():
        return
    print(f"building {target} ...", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    run(cmd, log)


def training_inputs(scratch: Path, config: dict) -> dict[str, Path]:
    """The default DPO job's inputs, made by the workflow's own commands (workflow/rules/data.smk,
    base_model.smk, train.smk) with the default config's settings. They are kept in a folder named
    by those settings, so that a changed config builds new ones instead of timing stale ones."""
    sft_name, pref_name, model = "wildchat_like", "support_chosen", "tiny"
    world = as_json({"seed": config["seed"], **config["world"]})
    # everything the inputs are made from, the SFT phase's command line included
    used = [world, config["sft_datasets"][sft_name], config["preference_datasets"][pref_name],
            config["models"][model], train_args(config, "sft", Path(), Path(), Path(), config["sft"])]
    inputs = scratch / f"inputs-{hashlib.sha256(as_json(used).encode()).hexdigest()[:12]}"
    data = inputs / "data"
    paths = {"pretrain": data / "pretrain.jsonl", "sft": data / f"{sft_name}.jsonl",
             "pref": data / f"{pref_name}.jsonl", "base": inputs / model / "base",
             "sft_run": inputs / model / f"sft-{sft_name}"}
    paths["start"] = paths["sft_run"] / "snapshots" / str(len(snapshot_fractions(config)))  # its last
    steps = {
        "pretrain": ["prepare-data", "--kind", "pretrain", "--world", world,
                     "--settings", as_json(config["world"]["pretrain_corpus"]), "--output", str(paths["pretrain"])],
        "sft": ["prepare-data", "--kind", "sft", "--name", sft_name, "--world", world,
                "--settings", as_json(config["sft_datasets"][sft_name]), "--output", str(paths["sft"])],
        "pref": ["prepare-data", "--kind", "preference", "--name", pref_name, "--world", world,
                 "--settings", as_json(config["preference_datasets"][pref_name]), "--output", str(paths["pref"])],
        "base": ["build-base", "--corpus", str(paths["pretrain"]), "--output", str(paths["base"]),
                 "--settings", as_json(config["models"][model]["miniature"]), "--seed", str(config["seed"]),
                 "--threads", str(config["resources"]["base"]["cpus"])],
        "start": train_args(config, "sft", paths["base"], paths["sft"], paths["sft_run"], config["sft"]),
    }
    data.mkdir(parents=True, exist_ok=True)
    for name, args in steps.items():
        build_once(paths[name], [*VALUEDRIFT, *args], inputs / "logs" / f"{name}.log")
    return paths


def train_args(config: dict, algorithm: str, start: Path, data: Path, run_dir: Path, settings: dict) -> list[str]:
    """`valuedrift train`'s arguments as workflow/rules/train.smk gives them on one CPU process."""
    args = ["train", "--algorithm", algorithm, "--model", str(start), "--data", str(data), "--run-dir", str(run_dir),
            *snapshot_args(config), "--snapshot-dtype", config["storage"]["snapshot_dtype"],
            "--settings", as_json({k: v for k, v in settings.items() if k != "algorithm"})]
    if algorithm != "sft":
        args += ["--lora", as_json(config["lora"])]
    return args + ["--seed", str(training_seed(config)), "--threads", str(config["resources"]["train"]["cpus"])]


def snapshot_args(config: dict) -> list[str]:
    """Where the snapshots go, as the workflow passes them."""
    return ["--fractions", as_json(snapshot_fractions(config))]


def training_seed(config: dict) -> int:
    """The first replicate's training seed."""
    return config["grid"]["seeds"][0]


# The honest baseline: what a user writes to run the same DPO training with TRL, and nothing else
# (no snapshots, no checkpoints, no resume bookkeeping). It reads the rows into memory as
# `valuedrift train` does: a `load_dataset` cache would let its reruns skip the tokenization.
BARE_DPO = """\
import json
import sys

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

model_dir, data, output_dir, settings, seed, threads = sys.argv[1:]
torch.set_num_threads(int(threads))
with open(data) as f:
    rows = [json.loads(line) for line in f]
dataset = Dataset.from_list([{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in rows])
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir)
config = DPOConfig(output_dir=output_dir, seed=int(seed), **json.loads(settings))
DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer).train()
"""


def effective_settings(settings: dict) -> dict:
    """The DPOConfig fields `valuedrift train` sets on top of config.yaml's (its defaults for
    every machine, valuedrift.training.trainers), so the bare script trains the same way."""
    import torch

    from valuedrift.training.trainers import BASE_DEFAULTS

    cuda = torch.cuda.is_available()
    return {**BASE_DEFAULTS, "bf16": cuda and torch.cuda.is_bf16_supported(), "dataloader_pin_memory": cuda,
            **settings}


def train_loss(log: Path) -> str | None:
    """The final mean loss the Trainer logs: equal in both jobs when they train the same way."""
    found = re.findall(r"'train_loss': '([^']+)'", log.read_text())
    return found[-1] if found else None


def training_overhead(scratch: Path, repeats: int = 3) -> dict:
    """Wall time of the default DPO job as the workflow runs it against a bare TRL script."""
    config = default_config()
    paths = training_inputs(scratch, config)
    settings = {k: v for k, v in config["algorithms"]["dpo"].items() if k != "algorithm"}
    bare_script = scratch / "bare_dpo.py"
    bare_script.write_text(BARE_DPO)
    runs, logs = scratch / "runs", scratch / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    commands = {
        "valuedrift train": [*VALUEDRIFT, *train_args(config, "dpo", paths["start"], paths["pref"], runs / "dpo",
                                                      settings)],
        "bare TRL": [sys.executable, str(bare_script), str(paths["start"]), str(paths["pref"]), str(runs / "bare"),
                     as_json(effective_settings(settings)), str(training_seed(config)),
                     str(config["resources"]["train"]["cpus"])],
    }
    seconds = {name: [] for name in commands}
    for i in range(repeats):
        for name, cmd in commands.items():  # alternating, so drifting load hits both alike
            shutil.rmtree(runs, ignore_errors=True)
            runs.mkdir(parents=True)
            log = logs / f"{name.replace(' ', '_')}-{i}.log"
            seconds[name].append(run(cmd, log))
            print(f"  {name} #{i + 1}: {seconds[name][-1]:.1f} s", flush=True)
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    losses = {name: train_loss(logs / f"{name.replace(' ', '_')}-0.log") for name in commands}
    return {"job": shlex.join(commands["valuedrift train"][len(VALUEDRIFT):]),
            "seconds": seconds, "median_s": medians, "train_loss": losses,
            "ratio": medians["valuedrift train"] / medians["bare TRL"]}


def print_training(figures: dict) -> None:
    repeats = len(figures["seconds"]["bare TRL"])
    print(f"\ntraining overhead: the default DPO job against a bare TRL script (medians of {repeats}, alternating)")
    for name, median in figures["median_s"].items():
        times = ", ".join(f"{t:.1f}" for t in figures["seconds"][name])
        print(f"  {name:17s} median {median:5.1f} s  ({times})  train_loss {figures['train_loss'][name]}")
    print(f"  ratio valuedrift train / bare TRL: {figures['ratio']:.2f}x")
    print(f"  job: valuedrift {figures['job']}")


# ---- probe stage: one job per snapshot (the old shape) against one job per run -------------

def finished_runs(results: Path, limit: int) -> list[Path]:
    """Run folders of a finished study whose snapshots are all there (reward models aside)."""
    runs = sorted({p.parent.parent for p in results.glob("*/seed-*/**/snapshots/0") if "/reward-" not in str(p)})
    return [r for r in runs if (r / "snapshots").is_dir()][:limit]


def snapshots_of(run: Path) -> list[Path]:
    return sorted((p for p in (run / "snapshots").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def run_jobs(commands: list[list[str]], workers: int, logs: Path) -> tuple[float, float]:
    """(job-seconds, wall seconds) of running the commands `workers` at a time, as `snakemake
    --cores 2` runs one-core jobs."""
    from concurrent.futures import ThreadPoolExecutor

    logs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        seconds = list(pool.map(lambda job: run(job[1], logs / f"{job[0]}.log"), enumerate(commands)))
    return sum(seconds), time.perf_counter() - start


def probe_judges(config: dict, results: Path) -> str:
    """Every judge that labels every run's answers (`judge.name` and `judge.compare`), as `--judges`
    takes them (workflow/rules/common.smk: judge_specs)."""
    names = dict.fromkeys([config["judge"]["name"], *(config["judge"].get("compare") or [])])
    specs = []
    for name in names:
        settings = dict(config["judges"][name])
        if settings.get("encoder") in config["models"]:  # a miniature model named in the config
            settings["encoder"] = str(results / settings["encoder"] / "base")
        specs.append({"name": name, "settings": settings, "model_dir": str(results / "judge" / name)})
    return as_json(specs)


def probe_commands(runs: list[Path], results: Path, out: Path, per_run: bool) -> list[list[str]]:
    """The behaviour probe's commands with the default config's settings and judges: per snapshot
    a generate job and a judge job (the old shape), or per run one generate job that also judges
    (the workflow's shape where every judge is a trained classifier)."""
    config = default_config()
    judges = probe_judges(config, results)
    n_judges = len(json.loads(judges))
    commands = []
    for i, run in enumerate(runs):
        snaps = [str(p) for p in snapshots_of(run)]
        gens = [str(out / f"{i}-{k}.generations.jsonl") for k in range(len(snaps))]
        groups = [(snaps, gens)] if per_run else [([a], [b]) for a, b in zip(snaps, gens)]
        for snap, gen in groups:
            # judge by judge, as `--judges` writes them
            stances = [g.replace("generations", f"stances-{j}") for j in range(n_judges) for g in gen]
            generate = [*VALUEDRIFT, "generate", "--model", *snap, "--prompts",
                        str(results / "data" / "eval_prompts.jsonl"), "--output", *gen,
                        "--settings", as_json(config["behaviour"]), "--seed", str(config["seed"])]
            judge = ["--judges", judges, "--stances", *stances] if per_run else []
            commands.append(("generate", generate + judge))
            if not per_run:
                commands.append(("judge", [*VALUEDRIFT, "judge", "--generations", *gen, "--judges", judges,
                                           "--output", *stances]))
    return commands


def probe_shape(scratch: Path, repeats: int, results: Path = ROOT / "results", limit: int = 4,
                workers: int = 2) -> dict:
    """The behaviour probe of `limit` finished runs of the default study, both shapes."""
    runs = finished_runs(results, limit)
    if not runs:
        raise SystemExit(f"no finished runs under {results}: run the default study first (README command 1)")
    figures = {"runs": len(runs), "snapshots": sum(len(snapshots_of(r)) for r in runs), "workers": workers}
    for shape, per_run in (("one job per snapshot", False), ("one job per run", True)):
        out = scratch / "probes" / shape.replace(" ", "_")
        shutil.rmtree(out, ignore_errors=True)
        commands = probe_commands(runs, results, out, per_run)
        # judge jobs read the generate jobs' answers, so they start once those are done
        generate = [c for kind, c in commands if kind == "generate"]
        judge = [c for kind, c in commands if kind == "judge"]
        g_jobs, g_wall = run_jobs(generate, workers, out / "logs-generate")
        j_jobs, j_wall = run_jobs(judge, workers, out / "logs-judge") if judge else (0.0, 0.0)
        figures[shape] = {"jobs": len(commands), "generate_job_s": g_jobs, "judge_job_s": j_jobs,
                          "job_s": g_jobs + j_jobs, "wall_s": g_wall + j_wall}
        print(f"  {shape}: {figures[shape]['jobs']} jobs, {g_jobs + j_jobs:.0f} job-s", flush=True)
    return figures


def print_probes(figures: dict) -> None:
    print(f"\nprobe stage: generate + judge of {figures['runs']} runs ({figures['snapshots']} snapshots), "
          f"{figures['workers']} jobs at a time")
    print(f"  {'shape':22s}{'jobs':>6}{'generate job-s':>16}{'judge job-s':>13}{'job-s':>8}{'wall s':>8}")
    for shape in ("one job per snapshot", "one job per run"):
        f = figures[shape]
        print(f"  {shape:22s}{f['jobs']:>6}{f['generate_job_s']:>16.1f}{f['judge_job_s']:>13.1f}"
              f"{f['job_s']:>8.1f}{f['wall_s']:>8.1f}")
    old, new = figures["one job per snapshot"], figures["one job per run"]
    print(f"  per run / per snapshot: {new['job_s'] / old['job_s']:.2f}x job-seconds, "
          f"{new['wall_s'] / old['wall_s']:.2f}x wall time (the per-run job also judges, and scores answers for KL)")


# name -> (measure(scratch, repeats) -> figures, print(figures)); a section is one --only choice
SECTIONS = {"training": (training_overhead, print_training), "probes": (probe_shape, print_probes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=list(SECTIONS), help="run only this section; default: all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "valuedrift-job-shape",
                        help="where the jobs' inputs are cached and the jobs run")
    args = parser.parse_args()
    for name in [args.only] if args.only else SECTIONS:
        measure, show = SECTIONS[name]
        show(measure(args.scratch.resolve(), args.repeats))


if __name__ == "__main__":
    main()
