"""Content checksums: what a snapshot holds, and what a training phase started from.

A snapshot's `meta.json` lists the sha256 of every file beside it, computed when the snapshot is
saved. Loading a snapshot for a probe checks them, so bytes changed after training (a second run
writing into the same folder, a disk fault) stop the probe instead of being measured. A training
phase's resume identity is built from the same digests: a start model or data file whose contents
changed makes an interrupted phase start afresh instead of resuming stale work.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from valuedrift.io import InputError

META = "meta.json"
_CHUNK = 1 << 20


class CorruptSnapshot(InputError):
    """A snapshot's files no longer match the checksums written with it."""


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_checksums(folder: str | os.PathLike) -> dict[str, str]:
    """sha256 of every file under `folder` but its meta.json, by relative path."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != META)
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in files}


def recorded_checksums(folder: str | os.PathLike) -> dict[str, str] | None:
    """The checksums a snapshot's meta.json records, or None (no meta.json, or written without)."""
    meta = Path(folder) / META
    if not meta.is_file():
        return None
    return json.loads(meta.read_text(encoding="utf-8")).get("checksums")


def content_id(location: str | os.PathLike | None) -> str | None:
    """A digest of what `location` holds. A snapshot is identified by the checksums its meta.json
    records (reading them costs nothing); another folder or a file by hashing its bytes; a string
    that is neither is a hub id and stands for itself."""
    if location is None:
        return None
    path = Path(location)
    if path.is_dir():
        checksums = recorded_checksums(path) or folder_checksums(path)
        return hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()
    if path.is_file():
        return file_sha256(path)
    return f"hub:{location}"


def verify_snapshot(folder: str | os.PathLike) -> None:
    """Raise CorruptSnapshot when a file that the snapshot's meta.json lists is missing or differs.
    Folders without recorded checksums (a hub model, a base model built here) pass unchecked."""
    recorded = recorded_checksums(folder)
    if not recorded:
        return
    for name, expected in recorded.items():
        path = Path(folder) / name
        if not path.is_file():
            raise CorruptSnapshot(f"{path}: missing, but listed in {Path(folder) / META} — the snapshot is "
                                  "incomplete; delete the run's snapshots folder and run its training again")
        if file_sha256(path) != expected:
            raise CorruptSnapshot(f"{path}: contents differ from the checksum written with the snapshot — it was "
                                  "overwritten or damaged after training; delete the run's snapshots folder and run "
                                  "its training again")
