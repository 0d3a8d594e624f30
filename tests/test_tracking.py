"""Tracking (the config's `tracking`: TRL's report_to in every phase) and the progress bars of the
long stages, in the logs the jobs write."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from valuedrift.cli import main as cli
from valuedrift.config import validate_config
from valuedrift.io import InputError
from valuedrift.training import tracking

from conftest import WORLD
from test_config import broken as config_with, problem

RUN = "tiny/seed-0/sft-s"  # a run's grid path (valuedrift.grid.Run.path)
SETTINGS = json.dumps({"per_device_train_batch_size": 8, "num_train_epochs": 1, "max_length": 96})  # 6 steps
# what the trainers' callbacks read, set by tracking.prepare_environment
VARIABLES = ("TENSORBOARD_LOGGING_DIR", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "MLFLOW_TRACKING_URI",
             "MLFLOW_EXPERIMENT_NAME", "TRACKIO_DIR")


def train_args(tiny, run_dir, tracking_json):
    return ["train", "--algorithm", "sft", "--model", str(tiny / "base"), "--data", str(tiny / "sft.jsonl"),
            "--run-dir", str(run_dir), "--snapshots", "2", "--settings", SETTINGS, "--tracking", tracking_json,
            "--run-name", RUN]


@pytest.fixture(scope="module")
def tracked_job(tiny, tmp_path_factory):
    """A tracked SFT phase run as a workflow job runs it: its own process, stdout and stderr to a log."""
    d = tmp_path_factory.mktemp("tracked")
    log = d / "train.log"
    with open(log, "w") as out:
        subprocess.run([sys.executable, "-m", "valuedrift",
                        *train_args(tiny, d / "run", json.dumps({"dir": str(d / "tracking")}))],
                       stdout=out, stderr=subprocess.STDOUT, cwd=d, check=True)
    return d


def test_tensorboard_shows_the_loss_of_every_logged_step_under_the_runs_grid_path(tracked_job):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = tracked_job / "tracking" / RUN
    assert list(folder.glob("events.out.tfevents.*")), f"no event file in {folder}"
    events = EventAccumulator(str(folder))
    events.Reload()
    state = json.loads((tracked_job / "run" / "trainer_state.json").read_text())
    logged = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert len(logged) == 6
    assert [e.step for e in events.Scalars("train/loss")] == logged


def test_the_training_log_shows_its_progress(tracked_job):
    text = (tracked_job / "train.log").read_text()
    assert re.search(r"100%\|[^|]*\| 6/6 \[", text), "no finished progress bar of the 6 steps"
    assert f"tracking tensorboard as {RUN}" in text


def test_no_tracking_writes_nothing(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a stray default (./runs, results/tracking) would land
    cli(train_args(tiny, tmp_path / "run", "null"))
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert not list(tmp_path.rglob("events.out.tfevents.*")) and not (tmp_path / "run" / "runs").exists()
    assert tracking.parse("null") is None and tracking.parse('{"report_to": "none"}') is None


def without(package, monkeypatch):
    """As if `package` were not installed."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else find_spec(name, *a))


def test_tracking_is_optional_and_null_turns_it_off():
    validate_config(config_with(lambda c: c.pop("tracking")))
    validate_config(config_with(lambda c: c.update(tracking=None)))
    validate_config(config_with(lambda c: c["tracking"].update(report_to=["tensorboard"])))


def test_an_unknown_backend_is_named():
    msg = problem(config_with(lambda c: c["tracking"].update(report_to="comet")))
    assert "config key tracking.report_to" in msg and "'comet'" in msg and "wandb" in msg
    msg = problem(config_with(lambda c: c["tracking"].update(report_to=["tensorboard", "neptune"])))
    assert "config key tracking.report_to" in msg and "neptune" in msg


def test_a_backend_that_is_not_installed_says_how_to_install_it(monkeypatch):
    without("mlflow", monkeypatch)
    msg = problem(config_with(lambda c: c["tracking"].update(report_to=["tensorboard", "mlflow"])))
    assert "config key tracking.report_to" in msg and "pip install mlflow" in msg
    # and at the job's start, before any model loads
    with pytest.raises(InputError, match="pip install mlflow"):
        tracking.trainer_fields(tracking.Tracking(report_to="mlflow"), RUN, {})


def test_a_trainers_own_report_to_is_refused():
    msg = problem(config_with(lambda c: c["sft"].update(report_to="wandb")))
    assert "config key sft.report_to" in msg and "tracking.report_to" in msg
    with pytest.raises(InputError, match="report_to"):
        tracking.trainer_fields(tracking.Tracking(), RUN, {"report_to": "wandb"})


def test_the_schema_offers_exactly_the_backends():
    from valuedrift.config import load_schema

    report_to = load_schema()["properties"]["tracking"]["properties"]["report_to"]["oneOf"]
    assert set(report_to[0]["enum"]) == {*tracking.BACKENDS, "none"}
    assert set(report_to[1]["items"]["enum"]) == set(tracking.BACKENDS)


def test_defaults_are_offline_and_local_and_the_users_settings_win(tmp_path, monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    settings = tracking.Tracking(report_to=["tensorboard", "wandb"], dir=str(tmp_path / "t"))
    tracking.prepare_environment(settings, RUN)
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "t" / RUN)
    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_PROJECT"] == "valuedrift"
    assert os.environ["MLFLOW_TRACKING_URI"] == (tmp_path / "t" / "mlflow").as_uri()
    assert os.environ["TRACKIO_DIR"] == str(tmp_path / "t" / "trackio")
    monkeypatch.setenv("WANDB_MODE", "online")
    tracking.prepare_environment(settings, "tiny/seed-1/sft-s")
    assert os.environ["WANDB_MODE"] == "online"
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "t" / "tiny/seed-1/sft-s")


def test_a_fresh_start_drops_only_its_own_stale_events(tmp_path):
    settings = tracking.Tracking(dir=str(tmp_path))
    sft, dpo = tmp_path / RUN, tmp_path / RUN / "dpo-p"
    dpo.mkdir(parents=True)
    for folder in (sft, dpo):
        (folder / "events.out.tfevents.1.host.1.0").write_text("")
    tracking.clear_stale_events(settings, RUN)
    assert not list(sft.glob("events.*")) and list(dpo.glob("events.*"))


def test_generate_logs_each_snapshot_and_a_bar_of_batches(tiny, tmp_path, caplog, capfd):
    prompts = tmp_path / "eval.jsonl"
    cli(["prepare-data", "--kind", "eval-prompts", "--world", WORLD, "--output", str(prompts)])
    caplog.set_level("INFO", logger="valuedrift")
    cli(["generate", "--model", str(tiny / "base"), str(tiny / "base"), "--prompts", str(prompts),
         "--output", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"),
         "--settings", json.dumps({"samples_per_question": 1, "max_new_tokens": 4, "kl_samples": 0})])
    assert "snapshot 1/2" in caplog.text and "snapshot 2/2" in caplog.text
    assert re.search(r"generate: 100%\|[^|]*\| 1/1 \[", capfd.readouterr().err)


def test_judge_shows_a_bar_over_the_judges_and_logs_each_file(stance_judge, tmp_path, capfd, caplog):
    """A judge takes every snapshot's answers in one call (one API batch per job): the bar counts
    judges, and each snapshot file is logged as it is written."""
    rows = [{"question": "Should cities ban cars?", "answer": "Yes, they should."}]
    files = [tmp_path / f"{k}.jsonl" for k in range(2)]
    for path in files:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    caplog.set_level("INFO", logger="valuedrift")
    cli(["judge", "--generations", *map(str, files), "--judge-model", str(stance_judge),
         "--output", *(str(tmp_path / f"stances-{k}.jsonl") for k in range(2))])
    assert re.search(r"judges: 100%\|[^|]*\| 1/1 \[", capfd.readouterr().err)
    assert all(f"{path}: judged 1 answers with stance_classifier" in caplog.text for path in files)
