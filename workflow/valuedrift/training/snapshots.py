"""Probe snapshots at fixed fractions of a training phase.

Snapshot k (k = 0..K) is the model after round(f_k × total steps) optimizer steps, where the
fractions f_k are k/K or a list the config gives (denser early, to time an early drift); k = 0 is
the starting model. Positions depend only on K and the phase length, so every algorithm's trajectory
lines up. Each snapshot is saved to a temporary folder and renamed into place with `meta.json`
written last: a folder with a `meta.json` is complete, anything else is ignored and rewritten.
`meta.json` also records the sha256 of every file of the snapshot (`valuedrift.checksums`), which
the probes check when they load it.
Snapshots may be stored in a narrower dtype than training uses (bfloat16 halves fp32's disk).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from transformers import TrainerCallback

from valuedrift.checksums import folder_checksums
from valuedrift.io import InputError, write_json


def snapshot_steps(total_steps: int, snapshots: int | list[float]) -> list[int]:
    """Steps of snapshots 0..K: K evenly spaced (an int K) or at the given fractions of the phase;
    K+1 distinct steps from 0 to total_steps."""
    if isinstance(snapshots, int):
        steps = [round(k * total_steps / snapshots) for k in range(snapshots + 1)]
    else:
        steps = [0] + [round(f * total_steps) for f in snapshots]
    if len(set(steps)) < len(steps):
        raise InputError(
            f"the phase has only {total_steps} optimizer steps, fewer than the {len(steps) - 1} "
            f"snapshots asked for need (steps {steps} coincide): lower snapshots_per_phase, space its "
            "fractions further apart, or train on more data/epochs"
        )
    return steps


def is_complete(folder: str | os.PathLike) -> bool:
    return (Path(folder) / "meta.json").is_file()


def cast_weights(folder: str | os.PathLike, dtype: str) -> None:
    """Rewrites a saved model's (or adapter's) safetensors files with floating tensors in `dtype`."""
    import torch
    from safetensors.torch import load_file, save_file

    target = getattr(torch, dtype)
    for path in Path(folder).glob("*.safetensors"):
        tensors = {name: t.to(target) if t.is_floating_point() else t for name, t in load_file(path).items()}
        save_file(tensors, path, metadata={"format": "pt"})
    config = Path(folder) / "config.json"
    if config.is_file():  # from_pretrained loads in the dtype the config names
        settings = json.loads(config.read_text())
        settings["dtype"] = dtype
        config.write_text(json.dumps(settings, indent=2) + "\n")


class SnapshotCallback(TrainerCallback):
    """Saves snapshot k when training reaches its step; skips snapshots already complete (resume)."""

    def __init__(self, folder: str | os.PathLike, snapshots: int | list[float], meta: dict, checkpoint: bool = True,
                 dtype: str = "auto"):
        self.folder = Path(folder)
        self.dtype = dtype  # stored dtype of the snapshots; auto: as trained
        self.checkpoint = checkpoint  # also request a resume checkpoint at each snapshot
        self.snapshots = snapshots  # K, or the fractions of snapshots 1..K
        self.num_snapshots = snapshots if isinstance(snapshots, int) else len(snapshots)
        self.meta = meta
        self.trainer = None  # set by the caller once the trainer exists
        self.steps: list[int] = []
        # decided once, before training, so every process of a multi-GPU run agrees on which
        # snapshots to save (saving under ZeRO-3 is collective: all processes must take part)
        self.done = {int(p.name) for p in self.folder.glob("*") if p.name.isdigit() and is_complete(p)}

    def on_train_begin(self, args, state, control, **kwargs):
        self.steps = snapshot_steps(state.max_steps, self.snapshots)
        if state.global_step == 0:
            self._save(0, state)

    def on_step_end(self, args, state, control, **kwargs):
        for k, step in enumerate(self.steps):
            if k > 0 and step == state.global_step:
                self._save(k, state)
                # a full resume checkpoint at every snapshot but the last, so a restart redoes at
                # most one snapshot interval
                if self.checkpoint and k < self.num_snapshots:
                    control.should_save = True

    def _save(self, k: int, state) -> None:
        target = self.folder / str(k)
        if k in self.done:
            return
        tmp = self.folder / f".{k}.tmp"
        # save_model gathers sharded weights (DeepSpeed ZeRO-3) and writes on the main process only.
        self.trainer.save_model(str(tmp))
        if self.trainer.is_world_process_zero():
            if self.dtype != "auto":
                cast_weights(tmp, self.dtype)
            write_json(tmp / "meta.json", {
                **self.meta, "k": k, "step": state.global_step, "total_steps": state.max_steps,
                "fraction": state.global_step / state.max_steps, "checksums": folder_checksums(tmp),
            })
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
