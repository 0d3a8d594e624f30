"""`valuedrift import-checkpoints`: a run trained elsewhere (TRL, OpenRLHF, verl, ...) as snapshots.

An entry of `external_runs` names checkpoint folders (a glob or a list) that some other training
script wrote. This command makes them the run's snapshots 0..K, in the folders the probes read,
so they go through the same behaviour and representation probes, tables and figures as a run
trained here:

- A folder is a checkpoint when it holds a model's config (config.json, or adapter_config.json for
  a PEFT adapter) and all of its weights (safetensors read to their declared end; every shard an
  index lists). A Trainer checkpoint (`checkpoint-<step>`) must also hold trainer_state.json,
  which the Trainer writes last: without it the save was cut short. Anything else is skipped
  with a warning, never probed.
- A DeepSpeed ZeRO checkpoint without gathered weights (a `latest` file and global_step folders)
  is converted to one safetensors file with DeepSpeed's zero_to_fp32.
- Its step is trainer_state.json's `global_step`, else the number in its name; its fraction of
  the run is step / the last checkpoint's step.
- Snapshot 0 is the model the run started from: `start`, else (adapters) the adapter's base
  model, else the earliest checkpoint. Snapshots 1..K are the checkpoints nearest the configured
  fractions (`snapshots_per_phase`) of the last step; meta.json records each one's real step and
  fraction, which the tables and figures use.

Snapshots link to the checkpoint's files instead of copying them, and meta.json records their
checksums, so a checkpoint changed after import stops the probes instead of being measured. An
adapter's snapshot gets its own adapter_config.json whose base is `base` (or the one it names).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from valuedrift.io import InputError

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "adapter_model.bin")
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# what a checkpoint holds for resuming its training, not for using the model
TRAINING_STATE = re.compile(r"optimizer\..*|scheduler\..*|scaler\..*|rng_state.*|training_args\.bin|"
                            r"trainer_state\.json|latest|zero_to_.*\.py|global_step.*|meta\.json")
STEP_IN_NAME = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    folder: Path
    step: int


def checkpoint_folders(spec: dict) -> list[Path]:
    """The folders an entry names: its glob's matches (sorted), or its list as given."""
    given = spec["checkpoints"]
    if isinstance(given, str):
        return [Path(p) for p in sorted(glob.glob(os.path.expanduser(given))) if Path(p).is_dir()]
    return [Path(os.path.expanduser(p)) for p in given]


def _safetensors_complete(path: Path) -> bool:
    """A safetensors file is whole when it reaches the end its header declares for its last tensor."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return False
        (size,) = struct.unpack("<Q", head)
        try:
            header = json.loads(f.read(size))
        except ValueError:
            return False
    end = max((t["data_offsets"][1] for name, t in header.items() if name != "__metadata__"), default=0)
    return path.stat().st_size >= 8 + size + end


def is_zero_checkpoint(folder: Path) -> bool:
    return (folder / "latest").is_file() and any(folder.glob("global_step*"))


def missing(folder: Path) -> str | None:
    """Why `folder` is not a complete checkpoint, or None when it is one."""
    if not folder.is_dir():
        return "not a folder"
    if not ((folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()):
        return "no config.json or adapter_config.json"
    if folder.name.startswith("checkpoint-") and not (folder / TRAINER_STATE).is_file():
        return f"no {TRAINER_STATE}, which the Trainer writes last: the save was cut short"
    for index in INDEXES:
        if (folder / index).is_file():
            shards = set(json.loads((folder / index).read_text())["weight_map"].values())
            absent = sorted(s for s in shards if not (folder / s).is_file())
            return f"shards {', '.join(absent)} missing" if absent else None
    weights = [folder / w for w in WEIGHTS if (folder / w).is_file()]
    if not weights:
        return None if is_zero_checkpoint(folder) else "no weights (model.safetensors, adapter_model.safetensors, ...)"
    if any(w.suffix == ".safetensors" and not _safetensors_complete(w) for w in weights):
        return "a safetensors file ends before its last tensor (cut short)"
    return None


def step_of(folder: Path) -> int:
    state = folder / TRAINER_STATE
    if state.is_file():
        return int(json.loads(state.read_text())["global_step"])
    match = STEP_IN_NAME.search(folder.name)
    if match is None:
        raise InputError(f"{folder}: cannot tell its training step — name it checkpoint-<step> or give it the "
                         f"{TRAINER_STATE} its trainer wrote")
    return int(match.group(1))


def complete_checkpoints(name: str, spec: dict) -> list[Checkpoint]:
    """The entry's complete checkpoints by step; incomplete ones are skipped with a warning."""
    found = []
    for folder in checkpoint_folders(spec):
        problem = missing(folder)
        if problem:
            log.warning("external run %s: skipping %s: %s", name, folder, problem)
        else:
            found.append(Checkpoint(folder, step_of(folder)))
    steps = [c.step for c in found]
    if len(set(steps)) < len(steps):
        raise InputError(f"external run {name}: two checkpoints at the same step ({sorted(steps)}) — list the "
                         "folders of one training run only")
    if not found:
        raise InputError(f"external run {name}: no complete checkpoint among {spec['checkpoints']!r}")
    return sorted(found, key=lambda c: c.step)


def adapter_base(folder: Path, spec: dict) -> str | None:
    """The model a PEFT adapter applies to: `base` if the entry gives it, else the one it names."""
    config = folder / "adapter_config.json"
    if not config.is_file():
        return None
    return spec.get("base") or json.loads(config.read_text())["base_model_name_or_path"]


def start_model(name: str, checkpoints: list[Checkpoint], spec: dict) -> str | None:
    """What snapshot 0 is, if not a checkpoint: `start`, or for an adapter run its base model."""
    from valuedrift.config import is_hub_id

    base = adapter_base(checkpoints[-1].folder, spec)
    if base and not (Path(base).is_dir() or is_hub_id(base)):
        raise InputError(f"external run {name}: the adapters' base model {base!r} (from adapter_config.json, as "
                         "the training script saw it) is neither a folder here nor a hub id — give it as `base`")
    return spec.get("start") or base


def choose(name: str, checkpoints: list[Checkpoint], fractions: list[float], has_start: bool) -> list[Checkpoint]:
    """The checkpoints of snapshots 1..K (and 0 first, without a start model): each nearest its
    fraction of the last step. Two snapshots may not share a checkpoint."""
    first = [] if has_start else checkpoints[:1]
    later = checkpoints if has_start else checkpoints[1:]
    last = checkpoints[-1].step
    if not later:
        raise InputError(f"external run {name}: one checkpoint and no `start` — give the model it started from "
                         "as `start`, or more checkpoints")
    picked = [min(later, key=lambda c: (abs(c.step - f * last), c.step)) for f in fractions]
    if len(set(picked)) < len(picked):
        have = ", ".join(f"{c.step} ({c.step / last:.2f})" for c in later)
        raise InputError(f"external run {name}: {len(fractions)} snapshots asked for (snapshots_per_phase), but "
                         f"its checkpoints are at steps {have}: set snapshots_per_phase to at most {len(later)}, "
                         "or to fractions near these")
    return first + picked


def model_files(folder: Path) -> list[Path]:
    """The files of a checkpoint that make up the model (weights, config, tokenizer), not its
    training state."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not TRAINING_STATE.fullmatch(p.name))


def local_folder(model: str) -> Path:
    """A model folder, or the local copy of a hub model (from the cache when offline)."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model))
    except Exception as e:  # offline and not cached, a typo, a gated model: say which model and why
        raise InputError(f"model {model!r}: not a folder here, and the hub gave no copy of it ({e})") from e


def convert_zero(source: Path, target: Path) -> None:
    """A ZeRO checkpoint's gathered fp32 weights, saved as the model's own safetensors files
    (save_pretrained knows which weights are tied, which a raw state dict does not say)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoConfig, AutoModelForCausalLM

    log.info("converting the ZeRO checkpoint %s to safetensors", source)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))
    absent, unexpected = model.load_state_dict(get_fp32_state_dict_from_zero_checkpoint(str(source)), strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or set(absent) - tied:
        raise InputError(f"{source}: its ZeRO weights do not fit its config.json (missing {sorted(set(absent) - tied)}, "
                         f"unexpected {sorted(unexpected)})")
    model.tie_weights()
    model.save_pretrained(target)


def link_model(source: Path, target: Path, base: str | None) -> None:
    """Link `source`'s model files into `target` (files the target already has stay); an adapter's
    config is rewritten to name `base`."""
    for path in model_files(source):
        if (target / path.name).exists():
            continue
        if path.name == "adapter_config.json" and base:
            settings = json.loads(path.read_text())
            settings["base_model_name_or_path"] = str(Path(base).resolve()) if Path(base).is_dir() else base
            (target / path.name).write_text(json.dumps(settings, indent=2) + "\n")
        else:
            os.symlink(path.resolve(), target / path.name)


def add_tokenizer(target: Path, model: str | None) -> None:
    """A checkpoint saved without its tokenizer gets the start model's (the same for every step)."""
    if model is None:
        return
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(model).save_pretrained(target)


def publish(target: Path, source: Path, meta: dict, base: str | None, tokenizer_from: str | None) -> None:
    from valuedrift.checksums import folder_checksums
    from valuedrift.io import atomic_dir, write_json

    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()  # the empty folder Snakemake makes for an output
    with atomic_dir(target) as tmp:
        # files written here come first, links after: nothing is ever written through a link into
        # the checkpoint it points to
        if is_zero_checkpoint(source) and not any((source / w).is_file() for w in WEIGHTS):
            convert_zero(source, tmp)
        if not (source / "tokenizer_config.json").is_file():
            add_tokenizer(tmp, tokenizer_from)
        link_model(source, tmp, base)
        write_json(tmp / "meta.json", {**meta, "source": str(source.resolve()), "checksums": folder_checksums(tmp)})


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "import-checkpoints", __doc__)
    parser.add_argument("--name", required=True, help="the entry's name under external_runs")
    parser.add_argument("--spec", required=True, type=json.loads, help="JSON: the entry of external_runs")
    parser.add_argument("--fractions", required=True, type=json.loads,
                        help="JSON list: fractions of snapshots 1..K (snapshots_per_phase)")
    parser.add_argument("--run-dir", required=True, help="run folder to write (snapshots/0..K)")
    parser.add_argument("--state", required=True,
                        help="trainer_state.json to write: the last checkpoint's (its logged curves), or empty")
    return parser


def main(args: argparse.Namespace) -> None:
    from valuedrift.io import write_json

    checkpoints = complete_checkpoints(args.name, args.spec)
    start = start_model(args.name, checkpoints, args.spec)
    chosen = choose(args.name, checkpoints, args.fractions, has_start=start is not None)
    last = checkpoints[-1]
    base = adapter_base(last.folder, args.spec)
    folder = Path(args.run_dir) / "snapshots"
    snapshots = ([(None, 0)] if start else []) + [(c, c.step) for c in chosen]
    for k, (checkpoint, step) in enumerate(snapshots):
        source = local_folder(start) if checkpoint is None else checkpoint.folder
        meta = {"k": k, "step": step, "total_steps": last.step, "fraction": step / last.step,
                "external": args.name}
        publish(folder / str(k), source, meta, base if checkpoint is not None else None, tokenizer_from=start)
        log.info("snapshot %d/%d: %s (step %d of %d)", k, len(snapshots) - 1, source, step, last.step)
    state = last.folder / TRAINER_STATE
    write_json(args.state, json.loads(state.read_text()) if state.is_file() else {"log_history": []})
