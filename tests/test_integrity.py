"""Snapshots carry the checksums of their files, and a probe refuses one whose bytes changed."""

import json
import shutil
import subprocess

import pytest

from valuedrift.checksums import content_id, folder_checksums


@pytest.fixture(scope="module")
def snapshot(tiny, tmp_path_factory):
    from valuedrift.cli import main as cli

    run_dir = tmp_path_factory.mktemp("integrity") / "sft"
    cli(["train", "--algorithm", "sft", "--model", str(tiny / "base"), "--data", str(tiny / "sft.jsonl"),
         "--run-dir", str(run_dir), "--snapshots", "1",
         "--settings", json.dumps({"num_train_epochs": 1, "per_device_train_batch_size": 16, "max_length": 96})])
    return run_dir / "snapshots" / "1"


def generate(folder, tiny, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"question_id": "q1", "topic": "t", "question": "Should taxes rise?"}) + "\n")
    return subprocess.run(["valuedrift", "generate", "--model", str(folder), "--prompts", str(prompts), "--output",
                           str(tmp_path / "out.jsonl"), "--settings", json.dumps({"samples_per_question": 1,
                                                                                  "max_new_tokens": 4})],
                          capture_output=True, text=True, timeout=300)


def test_meta_records_the_checksum_of_every_file(snapshot):
    recorded = json.loads((snapshot / "meta.json").read_text())["checksums"]
    assert "model.safetensors" in recorded and "config.json" in recorded and "meta.json" not in recorded
    assert recorded == folder_checksums(snapshot)


def test_an_intact_snapshot_is_probed(snapshot, tiny, tmp_path):
    out = generate(snapshot, tiny, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]


def test_bytes_overwritten_at_the_same_size_are_refused(snapshot, tiny, tmp_path):
    copy = tmp_path / "snapshot"
    shutil.copytree(snapshot, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:] = bytes(64)  # the last tensor's bytes zeroed: still a loadable file of the same size
    weights.write_bytes(bytes(data))
    out = generate(copy, tiny, tmp_path)
    assert out.returncode == 2
    assert "model.safetensors: contents differ from the checksum written with the snapshot" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_missing_file_is_refused(snapshot, tiny, tmp_path):
    copy = tmp_path / "snapshot"
    shutil.copytree(snapshot, copy)
    (copy / "generation_config.json").unlink()
    out = generate(copy, tiny, tmp_path)
    assert out.returncode == 2 and "generation_config.json: missing" in out.stderr


def test_content_id_follows_contents_not_paths(snapshot, tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(snapshot, copy)
    assert content_id(copy) == content_id(snapshot)
    data = tmp_path / "a.jsonl"
    data.write_text('{"x": 1}\n')
    before = content_id(data)
    data.write_text('{"x": 2}\n')
    assert content_id(data) != before
    assert content_id("Qwen/Qwen3-4B-Base") == "hub:Qwen/Qwen3-4B-Base"
