"""Live training curves: the config's `tracking` section, passed to TRL's `report_to` in every phase.

A phase logs as the run it is, named by its grid path (`valuedrift.grid.Run.path`, e.g.
tiny/seed-0/sft-wildchat_like/dpo-support_chosen): TensorBoard writes under `<dir>/<run path>`,
so that `tensorboard --logdir results/tracking` shows every run side by side; trackio, wandb and
mlflow name the run so within `project`.

No default needs an account or a network: wandb runs offline unless WANDB_MODE says otherwise,
mlflow writes a local file store under `dir` unless MLFLOW_TRACKING_URI names another, and trackio
keeps its database under `dir` unless TRACKIO_DIR names another. Keys (WANDB_API_KEY, ...) stay in
the environment: nothing here reads or prints them.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from valuedrift.io import InputError

# report_to name -> the package it needs (for all four, its module and its pip name)
BACKENDS = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb", "mlflow": "mlflow"}
# the TrainingArguments fields set here for every phase; a trainer's settings may not set them too
TRAINER_FIELDS = ("report_to", "run_name", "project")


@dataclass(frozen=True)
class Tracking:
    report_to: str | list[str] = "tensorboard"   # a backend, a list of them, or none
    dir: str = "results/tracking"                 # TensorBoard's runs; the other backends' local files
    project: str = "valuedrift"                   # trackio's project, wandb's project, mlflow's experiment

    @property
    def backends(self) -> list[str]:
        names = [self.report_to] if isinstance(self.report_to, str) else list(self.report_to)
        return [n for n in names if n != "none"]

    def log_dir(self, run_name: str) -> Path:
        return Path(self.dir) / run_name


def parse(text: str) -> Tracking | None:
    """`--tracking` JSON (the config's section; {} takes the defaults) as settings; None when off
    (null, or report_to none)."""
    from valuedrift.config import from_dict

    section = json.loads(text)
    tracking = None if section is None else from_dict(Tracking, section)
    return tracking if tracking and tracking.backends else None


def missing_message(backend: str) -> str:
    package = BACKENDS[backend]
    return (f"{backend!r} needs the {package} package, which is not installed — pip install {package} (and add "
            f"it to envs/train.yaml where jobs run in conda envs), or choose another backend")


def missing(tracking: Tracking) -> list[str]:
    """The chosen backends whose package this Python cannot import."""
    return [b for b in tracking.backends if b in BACKENDS and importlib.util.find_spec(BACKENDS[b]) is None]


def config_problems(config: dict) -> list[str]:
    """For `validate_config`: a chosen backend that is not installed (the schema names unknown ones)."""
    section = config.get("tracking", {})
    if section is None:
        return []
    return [f"config key tracking.report_to: {missing_message(b)}" for b in missing(Tracking(**section))]


def trainer_fields(tracking: Tracking | None, run_name: str, settings: dict) -> dict:
    """The TRL fields that send a phase's logs to the trackers. A trainer's own `report_to` is refused
    rather than let win: one phase logging elsewhere, or under another name, would silently drop out
    of the side-by-side view of the grid; `tracking` is the one place that says where runs log."""
    if tracking is None:
        return {}
    clashes = [k for k in TRAINER_FIELDS if k in settings]
    if clashes:
        raise InputError(f"trainer setting(s) {', '.join(clashes)} are set by the `tracking` section for every "
                         "phase — remove them from the algorithm's settings and set tracking.report_to instead")
    absent = missing(tracking)
    if absent:
        raise InputError(f"tracking.report_to: {missing_message(absent[0])}")
    return {"report_to": tracking.backends, "run_name": run_name, "project": tracking.project}


def prepare_environment(tracking: Tracking, run_name: str) -> None:
    """Where each backend writes, set before the trainer starts its callbacks (they read these
    variables then). TensorBoard's folder is always the run's own: a TENSORBOARD_LOGGING_DIR left
    in the environment would pour every run into one folder. The rest are defaults the user's
    environment overrides."""
    root = Path(tracking.dir).resolve()
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(tracking.log_dir(run_name))
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_DIR", str(root))
    os.environ.setdefault("WANDB_PROJECT", tracking.project)
    # a file store: many jobs write at once, which one SQLite file (mlflow's own default) serializes
    os.environ.setdefault("MLFLOW_TRACKING_URI", (root / "mlflow").as_uri())
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", tracking.project)
    os.environ.setdefault("TRACKIO_DIR", str(root / "trackio"))


def clear_stale_events(tracking: Tracking, run_name: str) -> None:
    """A phase that starts afresh (not resuming) drops the TensorBoard events of its earlier runs, so
    its curve is not drawn over a stale one. Only the folder's own event files: a preference run's
    folder lies inside its SFT run's."""
    for event_file in tracking.log_dir(run_name).glob("events.out.tfevents.*"):
        event_file.unlink()
