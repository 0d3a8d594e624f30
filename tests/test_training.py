"""Real, brief TRL training on a tiny model: snapshots at the fixed positions, loadable, complete."""

import json

import pytest

from valuedrift.cli import main as cli
from valuedrift.training.snapshots import snapshot_steps

WORLD = json.dumps({"seed": 0, "eval_questions_per_topic": 5, "judge_test_questions_per_topic": 2})
TINY = {"vocab_size": 400, "hidden_size": 32, "num_layers": 2, "num_heads": 2,
        "pretrain": {"max_steps": 5, "per_device_train_batch_size": 16, "learning_rate": 3e-3, "max_length": 96}}


def test_snapshot_steps_are_evenly_spaced():
    assert snapshot_steps(10, 2) == [0, 5, 10]
    assert snapshot_steps(10, 4) == [0, 2, 5, 8, 10]
    assert snapshot_steps(3, 3) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="fewer than the 4 snapshots"):
        snapshot_steps(3, 4)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    cli(["prepare-data", "--kind", "pretrain", "--world", WORLD, "--settings", '{"size": 200, "terse_share": 0.5}',
         "--output", str(d / "pretrain.jsonl")])
    cli(["prepare-data", "--kind", "sft", "--name", "s", "--world", WORLD, "--output", str(d / "sft.jsonl"),
         "--settings", '{"size": 48, "mixture": {"support": 0.2, "neutral": 0.6, "oppose": 0.2}}'])
    cli(["prepare-data", "--kind", "preference", "--name", "p", "--world", WORLD, "--output", str(d / "pref.jsonl"),
         "--settings", '{"size": 32, "kind": "value_gap", "chosen": "support", "rejected": "oppose"}'])
    cli(["build-base", "--corpus", str(d / "pretrain.jsonl"), "--output", str(d / "base"), "--settings", json.dumps(TINY)])
    return d


def train(data, algorithm, start, train_data, run_dir, settings):
    cli(["train", "--algorithm", algorithm, "--model", str(start), "--data", str(train_data), "--run-dir", str(run_dir),
         "--snapshots", "2", "--settings", json.dumps({"per_device_train_batch_size": 8, "max_length": 96, **settings})])


def check_snapshots(run_dir, total_steps):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for k, step in enumerate(snapshot_steps(total_steps, 2)):
        folder = run_dir / "snapshots" / str(k)
        meta = json.loads((folder / "meta.json").read_text())
        assert (meta["k"], meta["step"], meta["total_steps"]) == (k, step, total_steps)
        AutoModelForCausalLM.from_pretrained(folder)
        AutoTokenizer.from_pretrained(folder)
    assert not (run_dir / ".train").exists(), "work folder is removed once the snapshots are published"


@pytest.fixture(scope="module")
def sft_run(data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "sft"
    train(data, "sft", data / "base", data / "sft.jsonl", run_dir, {"num_train_epochs": 1})
    return run_dir


def test_sft_writes_loadable_snapshots(sft_run):
    check_snapshots(sft_run, total_steps=6)  # 48 rows / 8 per step


def test_snapshot_zero_is_the_starting_model(data, sft_run):
    from safetensors.torch import load_file

    start = load_file(data / "base" / "model.safetensors")
    k0 = load_file(sft_run / "snapshots" / "0" / "model.safetensors")
    end = load_file(sft_run / "snapshots" / "2" / "model.safetensors")
    name = "model.layers.0.mlp.up_proj.weight"
    assert (start[name] == k0[name]).all()
    assert not (start[name] == end[name]).all()


def test_dpo_from_the_sft_result(data, sft_run, tmp_path):
    run_dir = tmp_path / "dpo"
    train(data, "dpo", sft_run / "snapshots" / "2", data / "pref.jsonl", run_dir, {"num_train_epochs": 1, "beta": 0.1})
    check_snapshots(run_dir, total_steps=4)


def test_unknown_trainer_field_is_refused_before_loading_anything(data, tmp_path):
    with pytest.raises(SystemExit) as e:
        train(data, "dpo", data / "base", data / "pref.jsonl", tmp_path / "x", {"betta": 0.1})
    assert e.value.code == 2
    assert not (tmp_path / "x").exists()
