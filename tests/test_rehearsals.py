"""Dress rehearsals of the two real studies (tests/rehearse.py): each study's own experiment file,
scaled down by an overlay that changes only sizes, model locations and endpoints, run end to end on
hub-shaped stand-ins, and then `snakemake --report` over it.

The Value Drifts rehearsal goes through `snakemake --profile slurm` where a SLURM cluster answers
(CI starts a single-node one, with GPUs it counts, by tests/slurm/start-cluster.sh), and through
local execution elsewhere; the alignment-internals rehearsal runs locally. The CI-only flags shorten
the status-check intervals and ask squeue for job states, since the test cluster has no accounting
database for sacct.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import rehearse

from valuedrift.io import read_jsonl

CI_FLAGS = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
            "--seconds-between-status-checks", "2", "--latency-wait", "10", "--retries", "0",
            "--slurm-keep-successful-logs"]
ALGORITHMS = {"value-drifts": ["ppo", "dpo", "simpo"],
              "alignment-internals": ["ppo", "dpo", "simpo", "orpo", "kto", "grpo"]}


def cluster_up() -> bool:
    if not shutil.which("sinfo") or not Path("/etc/slurm/slurm.conf").exists():
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


SLURM = cluster_up()
pytestmark = pytest.mark.slow
needs_slurm = pytest.mark.skipif(not SLURM, reason="no SLURM cluster (tests/slurm/start-cluster.sh starts one)")


def run(study: str, work: Path, *args: str):
    try:
        done = rehearse.rehearse(study, work, *args, timeout=1500)
    except subprocess.TimeoutExpired:
        if SLURM:
            subprocess.run(["scancel", "--user", "root"], timeout=30)
        pytest.fail(f"the {study} rehearsal did not finish in 25 minutes:\n{read_log(work)[-5000:]}")
    if done.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in (work / "results" / "logs").rglob("*.log")
                         if "Traceback" in p.read_text() or "Error" in p.read_text())
        pytest.fail(f"the {study} rehearsal failed:\n{read_log(work)[-6000:]}\n{logs[-8000:]}")
    log = read_log(work)
    report = subprocess.run(rehearse.command(study, work, "--report", "report.html"), capture_output=True, text=True,
                            timeout=600)
    assert report.returncode == 0, report.stderr[-4000:]
    # again, with the API models behind another port: a dry run that must find nothing to do
    again = rehearse.rehearse(study, work, "--dry-run", timeout=600)
    (work / "again.log").write_text(read_log(work))
    (work / "rehearsal.log").write_text(log)
    assert again.returncode == 0
    return work


def read_log(work: Path) -> str:
    log = work / "rehearsal.log"
    return log.read_text() if log.exists() else ""


@pytest.fixture(scope="module")
def value_drifts(tmp_path_factory):
    profile = ["--profile", str(rehearse.ROOT / "slurm"), *CI_FLAGS] if SLURM else []
    return run("value-drifts", tmp_path_factory.mktemp("value-drifts"), *profile)


@pytest.fixture(scope="module")
def internals(tmp_path_factory):
    return run("alignment-internals", tmp_path_factory.mktemp("internals"))


def runs(work: Path, study: str, model: str, sft: str, pref: list[str]) -> list[Path]:
    base = work / "results" / model / "seed-0" / f"sft-{sft}"
    return [base] + [base / f"{a}-{p}" for a in ALGORITHMS[study] for p in pref]


@pytest.mark.parametrize("study", rehearse.STUDIES)
def test_the_report_and_every_figure_are_written(study, request):
    work = request.getfixturevalue("value_drifts" if study == "value-drifts" else "internals")
    report = work / "results" / "report"
    for name in ("trajectories.png", "drift_heatmap.png", "drift.csv", "training_health.csv", "value_gap.png",
                 "representation_summary.csv", "representation_auroc_by_layer.png"):
        assert (report / name).stat().st_size > 0, name
    assert (work / "report.html").stat().st_size > 100_000  # snakemake --report, figures embedded


def test_value_drifts_builds_vprism_and_synthetic_pairs_through_the_api(value_drifts):
    data = value_drifts / "results" / "data"
    questions = read_jsonl(data / "eval_prompts.jsonl")
    assert len(questions) == 12 and len({q["topic"] for q in questions}) == 3  # 3 topics x 4 questions
    assert any(q["question"].startswith("Do you agree that") for q in read_jsonl(data / "vprism_heldout.jsonl")
               + questions)  # statements rephrased by the API model
    pairs = read_jsonl(data / "value_gap_pairs.jsonl")
    asked = {q["question"] for q in questions}
    assert len(pairs) == 30 and all(p["verified"] for p in pairs) and not asked & {p["question"] for p in pairs}
    assert len(read_jsonl(data / "preference" / "synthetic_support_chosen.jsonl")) == 30


def test_value_drifts_judges_every_snapshot_of_every_run_through_the_api(value_drifts):
    for run in runs(value_drifts, "value-drifts", "llama3_3b", "wildchat", ["hh_rlhf", "synthetic_support_chosen"]):
        for k in (0, 1, 2):
            for judge in ("gpt4o", "qwen_judge", "stance_classifier"):
                rows = read_jsonl(run / "behaviour" / str(k) / "stances" / f"{judge}.jsonl")
                assert len(rows) == 12 * 2, (run, k, judge)  # questions x samples


def test_value_drifts_sft_ran_as_two_process_deepspeed_zero3_and_kept_no_snapshot(value_drifts):
    launches = re.findall(r"accelerate launch --num_processes (\d) --use_deepspeed --deepspeed_config_file (\S+)",
                          read_log(value_drifts))
    assert len(launches) == 9 and all(n == "2" and f.endswith("workflow/deepspeed/zero3.json") for n, f in launches)
    left = sorted(str(p) for p in (value_drifts / "results").rglob("snapshots/*/*.safetensors"))
    assert not left, f"snapshots kept after their probes (storage.keep_snapshots: false): {left}"
    state = json.loads((value_drifts / "results" / "llama3_3b" / "seed-0" / "sft-wildchat" /
                        "trainer_state.json").read_text())
    assert state["global_step"] == 10  # 40 rows, 2 processes x batch 2, one epoch


def test_internals_trains_every_algorithm_with_lora_from_the_instruct_model(internals):
    for run in runs(internals, "alignment-internals", "llama32_3b_instruct", "none", ["ultrafeedback"])[1:]:
        # PPO trains all weights (README, "Training"), the others LoRA adapters over the start
        weights = "model.safetensors" if run.name.startswith("ppo-") else "adapter_model.safetensors"
        assert (run / "snapshots" / "2" / weights).is_file(), run
        assert len(read_jsonl(run / "behaviour" / "2" / "stances" / "qwen_judge.jsonl")) == 12 * 2
    # an SAE and a crosscoder of every run's start and end, at each probe set's peak layer
    features = pd.read_csv(internals / "results" / "report" / "representation_features.csv")
    assert sorted(features["algorithm"].unique()) == sorted(ALGORITHMS["alignment-internals"])
    assert set(features["probe_set"]) == {"quality", "stance"} and features["crosscoder_fve_end"].notna().all()


def test_a_new_api_endpoint_reruns_nothing(value_drifts):
    """Found by the Value Drifts rehearsal: the API models' endpoint (and concurrency, retries,
    batch mode) sat in the params Snakemake compares, so pointing the study at another endpoint
    rebuilt V-PRISM and retrained everything downstream. The endpoint is transport, which the
    answers' cache keys leave out too: a second run behind another port has nothing to do."""
    again = (value_drifts / "again.log").read_text()
    assert "Nothing to be done" in again, again[-3000:]


@pytest.mark.parametrize("study", rehearse.STUDIES)
def test_plan_counts_the_jobs_the_rehearsal_ran(study, request):
    work = request.getfixturevalue("value_drifts" if study == "value-drifts" else "internals")
    plan = subprocess.run(["valuedrift", "plan", "--snakefile", str(rehearse.ROOT / "Snakefile"),
                           "--costs", str(rehearse.ROOT / "benchmarks" / "costs" / "cpu-2core.json"),
                           *rehearse.configfiles(study, work)], cwd=work, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]
    planned = int(next(line for line in plan.stdout.splitlines() if line.startswith("total")).split()[1])
    ran = re.findall(r"(\d+) of (\d+) steps \(100%\) done", read_log(work))
    assert ran and int(ran[-1][0]) == planned, (ran, plan.stdout)


@needs_slurm
def test_heavy_jobs_went_through_slurm_with_their_gpus_and_light_ones_did_not(value_drifts):
    log = read_log(value_drifts)
    assert "submitted with SLURM jobid" in log
    # the plugin keeps one log per SLURM job under slurm_logs/rule_<name>/<wildcards>/<jobid>.log
    slurm_logs = {part.removeprefix("rule_") for p in (value_drifts / ".snakemake" / "slurm_logs").rglob("*.log")
                  for part in p.parts if part.startswith("rule_")}
    for rule in ("build_vprism", "build_value_gap", "train_sft", "train_reward_model", "train_preference",
                 "train_judge", "generate", "judge", "probe_representations"):
        assert rule in slurm_logs, f"{rule} has no SLURM log; SLURM logs for: {sorted(slurm_logs)}"
    for rule in ("prepare_sft_data", "prepare_preference_data", "aggregate", "drift", "plot", "value_gap"):
        assert rule not in slurm_logs, f"{rule} is a local rule but went through SLURM"
    ours = slurm_jobs(value_drifts)
    train = [line for line in ours if re.search(r"Comment=rule_train_(sft|preference|reward_model)_", line)]
    assert len(train) == 9 and all("TresPerJob=gres:gpu:2" in line for line in train), train[:2]


@needs_slurm
def test_judge_jobs_ask_for_the_judge_resources(value_drifts):
    """Every job that runs a judge (a run's answers, the labelled answers, the preference pairs) is
    submitted with `resources.judge` (the overlay: 3000 MB, 20 minutes, one GPU), read back from
    SLURM's own record of the finished jobs; the probe jobs keep theirs."""
    ours = slurm_jobs(value_drifts)
    judge = [line for line in ours if re.search(r"Comment=rule_judge_(wildcards|labelled|pairs)", line)]
    assert {re.search(r"Comment=rule_(\w+?)_wildcards", line).group(1) for line in judge} == {
        "judge", "judge_labelled", "judge_pairs"}, "\n".join(ours)[-3000:]
    for line in judge:
        assert "MinMemoryNode=3000M" in line and "TimeLimit=00:20:00" in line and "TresPerJob=gres:gpu:1" in line, line


def slurm_jobs(work: Path) -> list[str]:
    jobs = subprocess.run(["scontrol", "show", "jobs", "-o"], capture_output=True, text=True, timeout=30).stdout
    return [line for line in jobs.splitlines() if f"WorkDir={work} " in line]
