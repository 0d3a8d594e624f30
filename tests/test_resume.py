"""A training phase killed mid-way (SIGTERM, as SLURM sends at a time limit) resumes from its last
checkpoint, keeps its snapshots, ends at the same final step, and never publishes a half phase."""

import json
import shutil
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


def command(setup, run_dir, model=None, data=None):
    return ["valuedrift", "train", "--algorithm", "sft", "--model", str(model or setup / "base"), "--data",
            str(data or setup / "sft.jsonl"), "--run-dir", str(run_dir), "--snapshots", str(K),
            "--settings", json.dumps(SETTINGS)]


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


def interrupt(cmd, run_dir):
    """Start a phase, SIGTERM it once snapshot 1 is written; return its checkpoint."""
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(run_dir / ".train" / "snapshots" / "1" / "meta.json", process)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == EXIT_PREEMPTED, out
    (checkpoint,) = (run_dir / ".train" / "checkpoints").glob("checkpoint-*")
    return checkpoint


@pytest.fixture
def own_inputs(setup, tmp_path):
    """A start model and a data file of this test's own, to change between the two attempts."""
    model, data = tmp_path / "start", tmp_path / "sft.jsonl"
    shutil.copytree(setup / "base", model)
    shutil.copy(setup / "sft.jsonl", data)
    return model, data


def test_a_start_model_changed_in_place_starts_the_phase_afresh(setup, own_inputs, tmp_path):
    """An upstream phase retrained with other settings writes new weights to the same path: the
    interrupted phase must not resume work that began from the old ones."""
    import torch
    from safetensors.torch import load_file, save_file

    model, data = own_inputs
    run_dir = tmp_path / "run"
    interrupt(command(setup, run_dir, model, data), run_dir)
    weights = {name: t + 0.01 for name, t in load_file(model / "model.safetensors").items()}
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    out = subprocess.run(command(setup, run_dir, model, data), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "inputs differ; starting this phase afresh" in out.stderr
    k0 = load_file(run_dir / "snapshots" / "0" / "model.safetensors")
    assert all(torch.equal(k0[name], weights[name]) for name in weights), "k=0 is the new start model"


def test_a_data_file_swapped_at_the_same_path_starts_the_phase_afresh(setup, own_inputs, tmp_path):
    model, data = own_inputs
    run_dir = tmp_path / "run"
    interrupt(command(setup, run_dir, model, data), run_dir)
    rows = data.read_text().splitlines()
    data.write_text("\n".join(reversed(rows)) + "\n")  # same rows, same size, another order
    out = subprocess.run(command(setup, run_dir, model, data), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "inputs differ; starting this phase afresh" in out.stderr


def test_a_checkpoint_killed_mid_save_is_skipped(setup, tmp_path):
    """A checkpoint folder without its trainer_state.json (the process died while writing it) is
    removed with a warning, and the phase resumes from the last complete one."""
    run_dir = tmp_path / "run"
    checkpoint = interrupt(command(setup, run_dir), run_dir)
    step = int(checkpoint.name.split("-")[1])
    half = checkpoint.parent / f"checkpoint-{step + 3}"
    shutil.copytree(checkpoint, half)
    (half / "trainer_state.json").unlink()
    out = subprocess.run(command(setup, run_dir), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"checkpoint-{step + 3} is incomplete" in out.stderr
    assert f"resuming from the last checkpoint (checkpoint-{step})" in out.stderr
    assert (run_dir / "snapshots" / str(K) / "meta.json").exists()
