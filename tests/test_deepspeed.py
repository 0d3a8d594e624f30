"""DeepSpeed ZeRO-2 and ZeRO-3 with two processes on CPU, launched as the workflow launches them
on GPUs: the losses match a single-process run with the same global batch, and the snapshots
(ZeRO-3: gathered 16-bit weights) load as ordinary models."""

import json
import subprocess

import pytest

ROOT_DS = "workflow/deepspeed/zero{}.json"
BATCH = 8  # global batch: 8 on one process, 4 on each of two
SETTINGS = {"num_train_epochs": 1, "max_length": 96, "logging_steps": 1, "learning_rate": 1e-3}
DATA = {"sft": ("sft.jsonl", {}), "dpo": ("pref.jsonl", {"beta": 0.1})}


def train(root, tiny, algorithm, start, run_dir, processes, zero=None):
    data, extra = DATA[algorithm]
    settings = {**SETTINGS, **extra, "per_device_train_batch_size": BATCH // processes}
    args = ["train", "--algorithm", algorithm, "--model", str(start), "--data", str(tiny / data),
            "--run-dir", str(run_dir), "--snapshots", "2", "--settings", json.dumps(settings)]
    if zero is None:
        cmd = ["valuedrift", *args]
    else:
        cmd = ["accelerate", "launch", "--num_processes", str(processes), "--use_deepspeed",
               "--deepspeed_config_file", str(root / ROOT_DS.format(zero)), "-m", "valuedrift", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return [h["loss"] for h in json.loads((run_dir / "trainer_state.json").read_text())["log_history"] if "loss" in h]


@pytest.fixture(scope="module")
def single(root, tiny, tmp_path_factory):
    """Single-process reference runs; DPO starts from the SFT result."""
    runs = tmp_path_factory.mktemp("single")
    starts = {"sft": tiny / "base", "dpo": runs / "sft" / "snapshots" / "2"}
    losses = {"sft": train(root, tiny, "sft", starts["sft"], runs / "sft", 1)}
    losses["dpo"] = train(root, tiny, "dpo", starts["dpo"], runs / "dpo", 1)
    return losses, starts


@pytest.mark.parametrize("zero", [2, 3])
@pytest.mark.parametrize("algorithm", ["sft", "dpo"])
def test_two_process_deepspeed_matches_one_process(root, tiny, single, algorithm, zero, tmp_path):
    from transformers import AutoModelForCausalLM

    reference, starts = single
    losses = train(root, tiny, algorithm, starts[algorithm], tmp_path / "run", 2, zero)
    assert len(losses) == len(reference[algorithm]) > 1
    assert losses == pytest.approx(reference[algorithm], abs=1e-4)
    for k in range(3):
        AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "snapshots" / str(k))
    assert reference[algorithm][-1] < reference[algorithm][0], "the runs compared actually learned"
