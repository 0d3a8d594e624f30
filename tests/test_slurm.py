"""The workflow through `snakemake --profile slurm` on a real SLURM cluster.

Runs where a cluster answers (CI starts a single-node one with tests/slurm/start-cluster.sh);
skipped elsewhere. The CI-only flags shorten the status-check intervals and ask squeue for job
states, since the test cluster has no accounting database for sacct.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

CI_FLAGS = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
            "--seconds-between-status-checks", "2", "--latency-wait", "10", "--retries", "0",
            "--slurm-keep-successful-logs"]


def cluster_up() -> bool:
    if not shutil.which("sinfo") or not Path("/etc/slurm/slurm.conf").exists():
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not cluster_up(), reason="no SLURM cluster (tests/slurm/start-cluster.sh starts one)")]


@pytest.fixture(scope="module")
def slurm_run(root, tmp_path_factory, server):
    """The smallest study through SLURM, judged by an OpenAI-compatible API (the loopback server),
    so that judging is a SLURM job of its own with the judge's resources."""
    work = tmp_path_factory.mktemp("slurm")
    api_judge = work / "api-judge.yaml"
    api_judge.write_text(yaml.safe_dump({
        "judges": {"loopback": {"kind": "openai_api", "model": "judge-model", "base_url": server.base_url,
                                "api_key_env": None, "concurrency": 8}},
        "judge": {"name": "loopback", "compare": ["loopback", "stance_classifier"], "min_accuracy": 0.0}}))
    cmd = ["snakemake", "--profile", str(root / "slurm"), "--snakefile", str(root / "Snakefile"),
           "--directory", str(work), "--configfile", str(root / "config.yaml"),
           str(root / "tests" / "config-ci.yaml"), str(root / "tests" / "config-slurm.yaml"), str(api_judge),
           *CI_FLAGS]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    except subprocess.TimeoutExpired as e:
        subprocess.run(["scancel", "--user", "root"], timeout=30)
        pytest.fail(f"snakemake through SLURM did not finish in 20 minutes:\n{(e.stderr or b'')[-5000:]}")
    if out.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in (work / ".snakemake" / "slurm_logs").rglob("*.log"))
        pytest.fail(f"snakemake --profile slurm failed:\n{out.stderr[-6000:]}\n{logs[-10000:]}")
    return work, out.stderr


def test_outputs_exist(slurm_run):
    work, _ = slurm_run
    for name in ("trajectories.png", "drift_heatmap.png", "drift_by_algorithm.png", "drift.csv"):
        assert (work / "results" / "report" / name).stat().st_size > 0


def test_snapshots_are_deleted_once_every_job_that_reads_them_is_done(slurm_run):
    work, log = slurm_run
    assert "Removing temporary output" in log
    runs = work / "results" / "tiny"
    assert list(runs.rglob("behaviour/1/stances/loopback.jsonl")), "the probes ran"
    left = sorted(str(p.relative_to(runs)) for p in runs.rglob("snapshots/*/*.safetensors"))
    assert not left, f"snapshots kept after their probes: {left}"


def test_heavy_jobs_went_through_slurm_and_light_ones_did_not(slurm_run):
    work, log = slurm_run
    assert "submitted with SLURM jobid" in log
    # the plugin keeps one log per SLURM job under slurm_logs/rule_<name>/<wildcards>/<jobid>.log
    slurm_logs = {part.removeprefix("rule_") for p in (work / ".snakemake" / "slurm_logs").rglob("*.log")
                  for part in p.parts if part.startswith("rule_")}
    for rule in ("build_base_model", "train_sft", "train_preference", "train_judge", "generate", "judge"):
        assert rule in slurm_logs, f"{rule} has no SLURM log; SLURM logs for: {sorted(slurm_logs)}"
    for rule in ("aggregate", "drift", "plot", "prepare_sft_data"):
        assert rule not in slurm_logs, f"{rule} is a local rule but went through SLURM"


def test_judge_jobs_ask_for_the_judge_resources(slurm_run):
    """Every job that runs a judge (a run's answers, the labelled answers, the preference pairs) is
    submitted with `resources.judge` (tests/config-slurm.yaml: 1500 MB, 10 minutes), read back from
    SLURM's own record of the finished jobs; the probe jobs keep theirs."""
    work, _ = slurm_run
    jobs = subprocess.run(["scontrol", "show", "jobs", "-o"], capture_output=True, text=True, timeout=30).stdout
    ours = [line for line in jobs.splitlines() if f"WorkDir={work} " in line]
    judge = [line for line in ours if re.search(r"Comment=rule_judge_(wildcards|labelled|pairs)", line)]
    assert {re.search(r"Comment=rule_(\w+?)_wildcards", line).group(1) for line in judge} == {
        "judge", "judge_labelled", "judge_pairs"}, f"SLURM's record of this run's jobs:\n{chr(10).join(ours)[-3000:]}"
    generate = [line for line in ours if "Comment=rule_generate_" in line]
    assert generate and all("MinMemoryNode=2000M" in line for line in generate)
    for line in judge:
        assert "MinMemoryNode=1500M" in line and "TimeLimit=00:10:00" in line, line
