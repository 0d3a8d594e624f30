"""`valuedrift train`: one training phase (SFT or a preference algorithm) with probe snapshots.

Work in progress lives in `<run>/.train/` (resume checkpoints and snapshots written so far) so
that it survives a crash: started again with the same settings, the phase resumes from its last
checkpoint and keeps the snapshots it already has. Only when the phase ends are the snapshots
moved to `<run>/snapshots/k/`, which is what the workflow's later stages read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    kwargs = dict(description=__doc__.split("\n\n")[0])
    parser = subparsers.add_parser("train", **kwargs) if subparsers else argparse.ArgumentParser(**kwargs)
    parser.add_argument("--algorithm", required=True, help="sft, dpo, ...")
    parser.add_argument("--model", required=True, help="starting model: hub id or folder")
    parser.add_argument("--data", required=True, help="training set (JSONL in the project's SFT or preference schema)")
    parser.add_argument("--run-dir", required=True, help="run folder; snapshots go to RUN_DIR/snapshots/k")
    parser.add_argument("--snapshots", type=int, required=True, help="K: snapshots after the start")
    parser.add_argument("--settings", default="{}", help="JSON: fields of the algorithm's TRL config")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    return parser


def settings_hash(args: argparse.Namespace) -> str:
    """Identifies everything that changes the trained weights; a resume needs the same hash."""
    key = json.dumps([args.algorithm, args.model, args.data, args.snapshots, json.loads(args.settings), args.seed],
                     sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def load_dataset_for(algorithm: str, path: str):
    from datasets import Dataset

    from valuedrift.io import read_jsonl
    from valuedrift.training.trainers import ALGORITHMS

    columns = {"sft": ["prompt", "completion"], "preference": ["prompt", "chosen", "rejected"]}[
        ALGORITHMS[algorithm].data]
    rows = read_jsonl(path, required=columns)
    return Dataset.from_list([{c: row[c] for c in columns} for row in rows])


def prepare_work_dir(work: Path, config_hash: str) -> bool:
    """Returns True when `work` holds a resumable checkpoint of the same settings."""
    stamp = work / "settings_hash"
    if stamp.exists() and stamp.read_text().strip() != config_hash:
        log.warning("settings changed since the interrupted run; starting this phase afresh")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(config_hash)
    return any((work / "checkpoints").glob("checkpoint-*"))


def publish_snapshots(work: Path, run_dir: Path, num_snapshots: int) -> None:
    from valuedrift.training.snapshots import is_complete

    out = run_dir / "snapshots"
    out.mkdir(parents=True, exist_ok=True)
    for k in range(num_snapshots + 1):
        src = work / "snapshots" / str(k)
        if not is_complete(src):
            raise RuntimeError(f"snapshot {k} was not written: {src}")
        if (out / str(k)).exists():
            shutil.rmtree(out / str(k))
        os.replace(src, out / str(k))


def main(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from valuedrift.training.snapshots import SnapshotCallback
    from valuedrift.training.trainers import ALGORITHMS, make_config, make_trainer

    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    work = run_dir / ".train"
    config_hash = settings_hash(args)
    # resume checkpoints are written at every snapshot (see SnapshotCallback); keep only the last
    settings = {"save_total_limit": 1, **json.loads(args.settings)}
    config = make_config(args.algorithm, settings, work / "checkpoints", args.seed)
    resume = prepare_work_dir(work, config_hash)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    ref_model = AutoModelForCausalLM.from_pretrained(args.model) if ALGORITHMS[args.algorithm].reference_model else None
    dataset = load_dataset_for(args.algorithm, args.data)
    meta = {"algorithm": args.algorithm, "start_model": args.model, "data": args.data,
            "settings_hash": config_hash}
    snapshots = SnapshotCallback(work / "snapshots", args.snapshots, meta)
    trainer = make_trainer(args.algorithm, model, tokenizer, dataset, config, ref_model, [snapshots])
    snapshots.trainer = trainer
    log.info("%s on %s: %d rows, %s", args.algorithm, args.data, len(dataset),
             "resuming from the last checkpoint" if resume else "starting")
    trainer.train(resume_from_checkpoint=True if resume else None)
    if trainer.is_world_process_zero():
        publish_snapshots(work, run_dir, args.snapshots)
        shutil.rmtree(work)
