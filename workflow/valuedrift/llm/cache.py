"""A persistent cache of model responses, shared by the threads and processes of many jobs, safe on
a network filesystem.

A rerun of an interrupted or repeated job looks every request up here first, so an answer that
was paid for once is never requested again. The cache also records the Batch API batches that were
submitted and not yet collected (`valuedrift.llm.batch`), so that a restarted job re-attaches to
its batch instead of paying for it again.

Layout: the cache `judge.sqlite` is a main file plus a folder of shards beside it,
`judge.sqlite.shards/<host>_<pid>_<random>.sqlite`, all SQLite files of the same tables.

- A process writes only to its own shard, created at its first write. No file is ever written by
  two processes.
- A process reads the main file and every shard that existed when it opened the cache, read-only.
  Where several files hold an answer to one request, the newest wins (an answer that replaced an
  unusable cached one).
- `merge` (`valuedrift cache-merge`) folds the shards whose owner is done into a new main file.
  Nothing needs it for correctness; it keeps the number of files that every lookup reads small.

Why so: the jobs of a cluster share the cache over NFS (or Lustre, GPFS, ...), where the two
things SQLite relies on to let several processes write one file fail. POSIX advisory locks (fcntl)
go through a separate lock manager that is often unreliable or off (mounts with `nolock`), and a
lock that silently does nothing lets two commits interleave their pages: a corrupt file. WAL mode
also needs the -shm file shared through memory, which hosts cannot share at all. So nothing here
relies on a lock for correctness:

- Each file has one writer. The owner writes its shard through SQLite's `unix-none` VFS (no locks
  to take, so none to fail) with the rollback journal, so a commit is all or nothing even when the
  process is killed in the middle: the next reader finds a hot journal.
- Readers open every other file read-only and without locks, so nothing a reader does can damage
  a file. A read that overlaps the owner's commit (what a working lock would have prevented) may
  find a journal it may not roll back or a torn page: SQLite reports an error, and the file is
  opened afresh a moment later or, failing that, its answers count as missing this time, which
  costs a request. Every row carries a digest of its content, so that a torn read that SQLite
  does not notice is dropped too: never a wrong answer. A shard whose owner died in the middle of
  a commit keeps its hot journal until merged; readers roll back a private copy of it.
- A shard appears complete, its tables in it (created under another name, then renamed): a reader
  that finds an empty database beside a journal deletes the journal as a leftover, which would
  break the owner's first commit.
- The main file is never modified in place. `merge` writes a new file beside it and renames it
  over the old one (a rename is atomic on NFS too), so a reader sees the old or the new main file,
  never a mix; and a reader reads the shards before the main file, so an answer that a merge
  moves from a shard to the main file is found in one or the other.
- `merge` deletes shards, so only one merge runs at a time (an atomic `mkdir`, which NFS does
  at the server), and it takes only shards whose owner is done: closed by it, or left by a
  process of this host that no longer runs. `everything=True` (`--all`) takes every shard, for
  when no job uses the cache: a job killed on another host never closes its shard.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import quote

log = logging.getLogger(__name__)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL, written REAL NOT NULL, "
    "digest TEXT NOT NULL)",
    # a batch submitted (keys: JSON list of the cache keys it answers) or collected (done = 1)
    "CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, keys TEXT, done INTEGER NOT NULL, digest TEXT NOT NULL)",
)
BATCHES = "SELECT id, keys, done, digest FROM batches"
CLOSED = 1    # a shard's user_version once its owner has closed it
CHUNK = 500   # keys per query, below SQLite's limit on parameters
READ_TRIES, READ_PAUSE = 3, 0.02  # reads of a file in the middle of a commit: tries, seconds between


def _digest(name: str, content: str | None) -> str:
    return hashlib.sha256(json.dumps([name, content]).encode("utf-8")).hexdigest()[:16]


def _intact(rows: Iterable[tuple]) -> Iterator[tuple]:
    """The rows (name, content, ..., digest) whose digest matches: a torn read gives one that does
    not. Rows of the main file of a single-file cache have none (NULL), and get theirs here: that
    file is never written in place, so it is read whole."""
    for *row, digest in rows:
        if digest is None or digest == _digest(row[0], row[1]):
            yield (*row, digest or _digest(row[0], row[1]))


@dataclass
class _Source:
    """One file read by the cache."""
    db: sqlite3.Connection
    path: Path
    answers: str | None  # the query of its answers; None: a file without them
    batches: bool        # whether it has the batches table (files written before batch mode have none)


def _uri(path: Path, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{quote(str(path.resolve()))}?{query}"


def _owner() -> str:
    """This process, as shard names spell it: host and pid (a forked child is another owner)."""
    return f"{socket.gethostname()}_{os.getpid()}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def shard_folder(path: str | os.PathLike) -> Path:
    return Path(f"{path}.shards")


def _source(db: sqlite3.Connection, path: Path) -> _Source:
    """The file's tables, read once here: this first read is where a hot journal shows up."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    answers = None
    if "responses" in tables:
        columns = {row[1] for row in db.execute("PRAGMA table_info(responses)")}
        # a main file of the single-file cache has neither time (older than any answer with one)
        # nor digest
        answers = ("SELECT key, value, written, digest FROM responses" if "digest" in columns
                   else "SELECT key, value, 0, NULL FROM responses")
    return _Source(db, path, answers, "batches" in tables)


def _read_only(path: Path, scratch: Callable[[], Path]) -> _Source | None:
    """`path` opened for reading, without locks; None where it cannot be read (said in the log).

    A file whose writer was killed in the middle of a commit has a hot journal, which a read-only
    connection may not roll back: a private copy in the folder `scratch()` is rolled back instead,
    so readers never write another process's file. A live writer's commit shows the same way for
    a few milliseconds (or as a torn page): the file is read again a moment later."""
    problem = None
    for attempt in range(READ_TRIES):
        db = sqlite3.connect(_uri(path, mode="ro", vfs="unix-none"), uri=True, check_same_thread=False)
        try:
            return _source(db, path)
        except sqlite3.Error as e:
            db.close()
            problem = e
            if getattr(e, "sqlite_errorname", "") == "SQLITE_READONLY_ROLLBACK":
                try:
                    return _rolled_back_copy(path, scratch())
                except FileNotFoundError:  # the journal is gone: the commit ended, read the file itself
                    pass
                except (OSError, sqlite3.Error) as copy_problem:
                    problem = copy_problem
        time.sleep(READ_PAUSE * (attempt + 1))
    log.warning("response cache: cannot read %s (%s); its answers count as missing until a later run or "
                "`valuedrift cache-merge` reads it", path, problem)
    return None


def _rolled_back_copy(path: Path, scratch: Path) -> _Source:
    copy = scratch / f"{path.name}.{secrets.token_hex(4)}"
    shutil.copyfile(f"{path}-journal", f"{copy}-journal")
    shutil.copyfile(path, copy)
    db = sqlite3.connect(copy, check_same_thread=False)
    try:
        source = _source(db, path)  # rolls the copy back
        # a live writer may have changed the files while they were copied
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("its copy is inconsistent")
        return source
    except sqlite3.Error:
        db.close()
        raise


def _create(path: Path) -> None:
    """A new file of the cache's tables at `path`, which appears there complete. A reader that
    finds an empty database beside a journal deletes the journal, taking it for a leftover (without
    a lock to tell it that a writer is at work), so an empty file must never be seen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = Path(f"{path}.new")
    with contextlib.closing(sqlite3.connect(_uri(new, vfs="unix-none"), uri=True)) as db, db:
        for statement in SCHEMA:
            db.execute(statement)
    os.replace(new, path)


class _Files:
    """The open files of one cache, kept apart from it so that closing needs no reference to it
    (`weakref.finalize` closes them when the cache is collected or the interpreter exits)."""

    def __init__(self):
        self.sources: list[_Source] = []   # the other processes' shards and the main file, read-only
        self.own: _Source | None = None    # this process's shard, read and written
        self.own_pid: int | None = None
        self.scratch: tempfile.TemporaryDirectory | None = None

    def readable(self) -> list[_Source]:
        return self.sources + ([self.own] if self.own is not None else [])

    def scratch_dir(self) -> Path:
        if self.scratch is None:
            self.scratch = tempfile.TemporaryDirectory(prefix="valuedrift-cache-")
        return Path(self.scratch.name)

    def close(self) -> None:
        if self.own is not None and self.own_pid == os.getpid():
            # closed: merge may take this shard while its host runs on; where the mark cannot be
            # written (a merge --all took the shard already), the shard just waits for the next one
            with contextlib.suppress(sqlite3.Error), self.own.db:
                self.own.db.execute(f"PRAGMA user_version = {CLOSED}")
        for source in self.readable():
            source.db.close()
        self.sources.clear()
        self.own = None
        if self.scratch is not None:
            self.scratch.cleanup()
            self.scratch = None


class ResponseCache:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.shards = shard_folder(self.path)
        # one set of connections guarded by a lock serves every thread
        self._lock = threading.Lock()
        self._files = _Files()
        self._finalizer = weakref.finalize(self, self._files.close)
        # shards before the main file: a merge in between moves answers into the main file
        for path in sorted(self.shards.glob("*.sqlite")) + [self.path]:
            if path.exists():
                source = _read_only(path, self._files.scratch_dir)
                if source is not None:
                    self._files.sources.append(source)

    @staticmethod
    def key(*parts) -> str:
        """A stable key for any JSON-serializable parts (sorted keys, so dict order never matters)."""
        text = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get(self, key: str) -> str | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        """The cached answers among `keys` (a key without an answer is left out)."""
        wanted = list(dict.fromkeys(keys))
        newest: dict[str, tuple[float, str]] = {}
        with self._lock:
            for source in self._files.readable():
                if source.answers is None:
                    continue
                for start in range(0, len(wanted), CHUNK):
                    chunk = wanted[start:start + CHUNK]
                    sql = f"{source.answers} WHERE key IN ({','.join('?' * len(chunk))})"
                    for key, value, written, _ in self._query(source, sql, chunk):
                        if key not in newest or written > newest[key][0]:
                            newest[key] = (written, value)
        return {key: value for key, (_, value) in newest.items()}

    def put(self, key: str, value: str) -> None:
        self.put_many([(key, value)])

    def put_many(self, items: Iterable[tuple[str, str]]) -> None:
        """Stores answers in one commit: all of them or, if the process dies first, none."""
        written = time.time()
        rows = [(key, value, written, _digest(key, value)) for key, value in items]
        with self._lock, self._writer() as db:  # the connection as context manager commits
            db.executemany("INSERT OR REPLACE INTO responses (key, value, written, digest) VALUES (?, ?, ?, ?)", rows)

    def pending_batches(self) -> dict[str, list[str]]:
        """Batches submitted and not yet collected: batch id -> the keys of its requests."""
        submitted: dict[str, list[str]] = {}
        collected: set[str] = set()
        with self._lock:
            for source in self._files.readable():
                if not source.batches:
                    continue
                for batch, keys, done, _ in self._query(source, BATCHES):
                    if done:
                        collected.add(batch)
                    else:
                        submitted[batch] = json.loads(keys)
        return {batch: keys for batch, keys in submitted.items() if batch not in collected}

    def add_batch(self, batch: str, keys: list[str]) -> None:
        """Records a submitted batch; committed (on disk) when this returns."""
        self._put_batch(batch, json.dumps(keys), 0)

    def finish_batch(self, batch: str) -> None:
        """Records that a batch's results are collected: no job re-attaches to it."""
        self._put_batch(batch, None, 1)

    def close(self) -> None:
        with self._lock:
            self._finalizer()

    def _put_batch(self, batch: str, keys: str | None, done: int) -> None:
        with self._lock, self._writer() as db:
            db.execute("INSERT OR REPLACE INTO batches (id, keys, done, digest) VALUES (?, ?, ?, ?)",
                       (batch, keys, done, _digest(batch, keys)))

    def _query(self, source: _Source, sql: str, params: Iterable = ()) -> list[tuple]:
        """The intact rows of a query of one file."""
        params = tuple(params)
        if source is self._files.own:  # no other process writes it: an error is a real one
            return list(_intact(source.db.execute(sql, params)))
        for attempt in range(READ_TRIES):
            try:
                return list(_intact(source.db.execute(sql, params)))
            except sqlite3.Error as e:
                problem = e
            # its owner's commit overlapped the read and may have left torn pages in this
            # connection's cache: open the file afresh, a moment later
            time.sleep(READ_PAUSE * (attempt + 1))
            fresh = _read_only(source.path, self._files.scratch_dir)
            if fresh is not None:
                source.db.close()
                source.db = fresh.db
        log.warning("response cache: skipping %s this time (%s); its answers count as missing", source.path, problem)
        return []

    def _writer(self) -> sqlite3.Connection:
        """This process's shard, created at its first write (a forked child creates its own)."""
        files = self._files
        if files.own is None or files.own_pid != os.getpid():
            path = self.shards / f"{_owner()}_{secrets.token_hex(4)}.sqlite"
            _create(path)
            db = sqlite3.connect(_uri(path, vfs="unix-none"), uri=True, check_same_thread=False)
            files.own, files.own_pid = _source(db, path), os.getpid()
        return files.own.db


# -- merging shards into the main file ------------------------------------------------------------

UPSERT_RESPONSE = ("INSERT INTO responses (key, value, written, digest) VALUES (?, ?, ?, ?) ON CONFLICT(key) "
                   "DO UPDATE SET value = excluded.value, written = excluded.written, digest = excluded.digest "
                   "WHERE excluded.written > responses.written")
# a collected batch's record (done, no keys) replaces its submission's, whichever file comes first
UPSERT_BATCH = ("INSERT INTO batches (id, keys, done, digest) VALUES (?, ?, ?, ?) ON CONFLICT(id) "
                "DO UPDATE SET keys = excluded.keys, done = excluded.done, digest = excluded.digest "
                "WHERE excluded.done > batches.done")


def _finished(shard: Path) -> bool:
    """Whether the shard's owner is done with it: it closed the shard, or it was a process of this
    host that no longer runs."""
    host, pid, _ = shard.stem.rsplit("_", 2)
    if host == socket.gethostname() and not _running(int(pid)):
        return True
    try:
        with contextlib.closing(sqlite3.connect(_uri(shard, mode="ro", vfs="unix-none"), uri=True)) as db:
            return db.execute("PRAGMA user_version").fetchone()[0] == CLOSED
    except sqlite3.Error:  # in the middle of a commit: still at work
        return False


@contextlib.contextmanager
def _merging(path: Path) -> Iterator[bool]:
    """Whether this process may merge: one merge at a time, by an atomic mkdir."""
    lock = Path(f"{path}.merging")
    try:
        lock.mkdir()
    except FileExistsError:
        log.warning("%s: another merge is running, so this one is skipped; if none runs (a merge was killed), "
                    "remove the folder %s", path, lock)
        yield False
        return
    try:
        yield True
    finally:
        lock.rmdir()


def _fsync_dir(folder: Path) -> None:
    """Makes a rename in `folder` durable before the files it replaces are deleted."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a folder; NFS commits a rename at once
        pass
    finally:
        os.close(fd)


def merge(path: str | os.PathLike, everything: bool = False) -> int:
    """Folds the shards of the cache at `path` whose owner is done (with `everything`, all of them:
    only when no job uses the cache) into a new main file; returns how many it folded."""
    path = Path(path)
    if not path.exists() and not shard_folder(path).exists():  # nothing was ever cached there
        return 0
    with _merging(path) as allowed:
        if not allowed:
            return 0
        shards = [s for s in sorted(shard_folder(path).glob("*.sqlite")) if everything or _finished(s)]
        if not shards and path.exists():
            return 0
        new = path.with_name(f"{path.name}.merge-{_owner()}.tmp")
        try:
            taken = _write_merged(new, path, shards)
            os.replace(new, path)
        finally:
            new.unlink(missing_ok=True)
        _fsync_dir(path.parent)
        for shard in taken:
            Path(f"{shard}-journal").unlink(missing_ok=True)
            shard.unlink()
    log.info("%s: merged %d shard(s)", path, len(taken))
    return len(taken)


def _write_merged(new: Path, main: Path, shards: list[Path]) -> list[Path]:
    """Writes the main file and the shards, newest answer per key, to the new file `new`; returns
    the shards it took (one that cannot be read now stays for a later merge)."""
    new.unlink(missing_ok=True)  # left by a merge that was killed
    taken = []
    with tempfile.TemporaryDirectory(prefix="valuedrift-cache-") as scratch, \
            contextlib.closing(sqlite3.connect(_uri(new, vfs="unix-none"), uri=True)) as out:
        with out:
            for statement in SCHEMA:
                out.execute(statement)
            if main.exists():
                source = _read_only(main, lambda: Path(scratch))
                if source is None:  # replacing it would lose its answers
                    raise sqlite3.DatabaseError(f"cannot read the cache's main file {main}")
                _copy_into(out, source)
            for shard in shards:
                source = _read_only(shard, lambda: Path(scratch))
                if source is not None:
                    _copy_into(out, source)
                    taken.append(shard)
        if out.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError(f"the merged file {new} failed its integrity check")
    return taken


def _copy_into(out: sqlite3.Connection, source: _Source) -> None:
    with contextlib.closing(source.db):
        if source.answers is not None:
            out.executemany(UPSERT_RESPONSE, _intact(source.db.execute(source.answers)))
        if source.batches:
            out.executemany(UPSERT_BATCH, _intact(source.db.execute(BATCHES)))


# -- the command ------------------------------------------------------------------------------------

def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "cache-merge", __doc__, description=(
        "Fold the shards of response caches (one per process that wrote answers) into their main files. "
        "Safe while jobs use the caches: only shards whose process is done are taken, unless --all."))
    parser.add_argument("caches", nargs="+", help="cache files (the `cache` setting of an openai_api entry)")
    parser.add_argument("--all", action="store_true", dest="everything",
                        help="take every shard, also those of processes that may still run: only when no job "
                             "uses the caches (a job killed on another host never closes its shard)")
    return parser


def main(args: argparse.Namespace) -> None:
    for cache in args.caches:
        merge(cache, everything=args.everything)
