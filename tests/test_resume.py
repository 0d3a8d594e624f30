"""A training phase killed mid-way (SIGTERM, as SLURM sends at a time limit) resumes from its last
checkpoint, keeps its snapshots, ends at the same final step, and never publishes a half phase."""

import json
import signal
import subprocess
import time

import pytest

from valuedrift.training.snapshots import snapshot_steps
from valuedrift.training.train import EXIT_PREEMPTED

SETTINGS = {"num_train_epochs": 4, "per_device_train_batch_size": 1, "max_length": 96, "learning_rate": 1e-3}
K = 4
ROWS = 48  # the tiny world's SFT set (conftest)


@pytest.fixture(scope="module")
def setup(tiny):
    return tiny


def command(setup, run_dir):
    return ["valuedrift", "train", "--algorithm", "sft", "--model", str(setup / "base"), "--data",
            str(setup / "sft.jsonl"), "--run-dir", str(run_dir), "--snapshots", str(K), "--settings", json.dumps(SETTINGS)]


def wait_for(path, process, timeout=300):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"training ended before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.05)


def test_sigterm_checkpoints_and_a_restart_resumes(setup, tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.Popen(command(setup, run_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(run_dir / ".train" / "snapshots" / "1" / "meta.json", first)
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == EXIT_PREEMPTED, out
    checkpoints = list((run_dir / ".train" / "checkpoints").glob("checkpoint-*"))
    assert checkpoints, "a checkpoint is written on SIGTERM"
    stopped_at = int(checkpoints[0].name.split("-")[1])
    total = ROWS * 4  # rows x epochs, one row per step
    assert 0 < stopped_at < total
    assert not (run_dir / "snapshots").exists(), "a half phase publishes nothing"
    assert_plan_sizes_the_checkpoint(setup, checkpoints[0])

    second = subprocess.run(command(setup, run_dir), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from the last checkpoint" in second.stderr
    for k, step in enumerate(snapshot_steps(total, K)):
        meta = json.loads((run_dir / "snapshots" / str(k) / "meta.json").read_text())
        assert (meta["k"], meta["step"], meta["total_steps"]) == (k, step, total)
    assert not (run_dir / ".train").exists()

    # the resumed phase ends where an uninterrupted one does: same data order, same weights
    from safetensors.torch import load_file

    whole = tmp_path / "uninterrupted"
    subprocess.run(command(setup, whole), capture_output=True, check=True, timeout=600)
    for k in (K - 1, K):
        resumed = load_file(run_dir / "snapshots" / str(k) / "model.safetensors")
        reference = load_file(whole / "snapshots" / str(k) / "model.safetensors")
        assert all((resumed[name] == reference[name]).all() for name in reference), f"snapshot {k} differs"


def test_changed_settings_start_afresh(setup, tmp_path):
    run_dir = tmp_path / "run"
    work = run_dir / ".train"
    (work / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    (work / "settings_hash").write_text("something-else")
    out = subprocess.run(command(setup, run_dir), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "starting this phase afresh" in out.stderr
    assert (run_dir / "snapshots" / str(K) / "meta.json").exists()


def assert_plan_sizes_the_checkpoint(setup, checkpoint):
    """`valuedrift plan`'s working-space figure is what the Trainer writes: weights and two moments."""
    from transformers import AutoConfig

    from valuedrift.plan import checkpoint_bytes, count_parameters

    n = count_parameters(AutoConfig.from_pretrained(setup / "base"))
    estimate = checkpoint_bytes({"deepspeed": None, "models": {"tiny": {"miniature": {}}}}, "tiny", n, lora=False)
    weights_and_moments = sum((checkpoint / name).stat().st_size for name in ("model.safetensors", "optimizer.pt"))
    assert abs(weights_and_moments - estimate) < 0.05 * estimate
    whole = sum(p.stat().st_size for p in checkpoint.rglob("*") if p.is_file())
    assert whole < 1.5 * estimate  # the rest (tokenizer, scheduler, random states) is small beside them
