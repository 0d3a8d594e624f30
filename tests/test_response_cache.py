"""The response cache shared by many jobs (workflow/valuedrift/llm/cache.py): processes writing and
reading at once, writers killed in the middle of a commit, caches written before shards, merging."""

import logging
import multiprocessing
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from valuedrift.cli import main as cli
from valuedrift.llm.cache import ResponseCache, merge, shard_folder

WORKERS = 4
PER_WORKER = 150


def key(worker: int, i: int) -> str:
    return ResponseCache.key("worker", worker, i)


def value(worker: int, i: int) -> str:
    # up to ~5 kB, every part of it naming its key: long values take overflow pages, and a torn
    # read that mixed two values' pages would show
    return (f"{worker}:{i};" * 500)[:(worker * 131 + i * 17) % 5000 + 10]


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def write_and_read(path: str, worker: int) -> list[str]:
    """Writes PER_WORKER answers, one by one and ten at a time, while every 30 writes a fresh cache
    reads back all workers' keys; returns what it found wrong."""
    cache = ResponseCache(path)
    problems = []
    for i in range(0, PER_WORKER, 10):
        if i % 20:
            cache.put_many([(key(worker, j), value(worker, j)) for j in range(i, i + 10)])
        else:
            for j in range(i, i + 10):
                cache.put(key(worker, j), value(worker, j))
        if i % 30 == 0:
            reader = ResponseCache(path)
            found = reader.get_many([key(w, j) for w in range(WORKERS) for j in range(PER_WORKER)])
            reader.close()
            expected = {key(w, j): value(w, j) for w in range(WORKERS) for j in range(PER_WORKER)}
            problems += [f"wrong value for {k}" for k, v in found.items() if v != expected[k]]
            problems += [f"worker {worker} lost its own {j}" for j in range(i + 10) if key(worker, j) not in found]
    cache.close()
    return problems


def test_concurrent_writers_and_readers(tmp_path):
    path = tmp_path / "cache" / "judge.sqlite"
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        problems = pool.starmap(write_and_read, [(str(path), w) for w in range(WORKERS)])
    assert problems == [[]] * WORKERS
    shards = sorted(shard_folder(path).glob("*.sqlite"))
    assert len(shards) >= WORKERS and all(integrity(s) == "ok" for s in shards)
    everything = {key(w, i): value(w, i) for w in range(WORKERS) for i in range(PER_WORKER)}
    assert ResponseCache(path).get_many(everything) == everything
    # every writer closed its shard, so a plain merge takes them all
    assert merge(path) == len(shards)
    assert list(shard_folder(path).iterdir()) == [] and integrity(path) == "ok"
    assert ResponseCache(path).get_many(everything) == everything


KILLED_MID_COMMIT = """
import os, signal, sys
from valuedrift.llm.cache import ResponseCache
cache = ResponseCache(sys.argv[1])
cache.put("before", "committed")
db = cache._writer()  # the cache's own connection, to stop in the middle of a commit
db.execute("PRAGMA cache_size = 10")  # spill pages into the file before the commit
db.execute("BEGIN")
db.executemany("INSERT INTO responses VALUES (?, ?, 0, '')", ((f"during-{i}", "x" * 500) for i in range(20000)))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_in_the_middle_of_a_commit_leaves_the_cache_readable(tmp_path, caplog):
    path = tmp_path / "judge.sqlite"
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_COMMIT, str(path)])
    assert killed.returncode == -signal.SIGKILL
    (shard,) = shard_folder(path).glob("*.sqlite")
    journal = Path(f"{shard}-journal")
    assert journal.exists(), "a hot journal: the commit never finished"
    before = (shard.read_bytes(), journal.read_bytes())
    # readers roll back a copy, never the file itself
    assert ResponseCache(path).get_many(["before", "during-0", "during-19999"]) == {"before": "committed"}
    assert (shard.read_bytes(), journal.read_bytes()) == before
    # its process is gone, so merge takes the shard, rolled back
    assert merge(path) == 1
    assert not shard.exists() and not journal.exists() and integrity(path) == "ok"
    assert ResponseCache(path).get_many(["before", "during-0"]) == {"before": "committed"}


KILLED_AT_RANDOM = """
import itertools, sys
from valuedrift.llm.cache import ResponseCache
cache = ResponseCache(sys.argv[1])
for n in itertools.count():
    cache.put_many([(f"{n}-{i}", "v" * 2000) for i in range(300)])
    print(n, flush=True)
"""


@pytest.mark.parametrize("delay", [0.0, 0.003, 0.011])
def test_a_writer_killed_at_any_moment_loses_at_most_its_last_commit(tmp_path, delay):
    path = tmp_path / "judge.sqlite"
    child = subprocess.Popen([sys.executable, "-c", KILLED_AT_RANDOM, str(path)], stdout=subprocess.PIPE, text=True)
    committed = [int(child.stdout.readline()) for _ in range(3)]
    time.sleep(delay)  # somewhere in the next commit, or between two
    child.kill()
    child.wait()
    child.stdout.close()
    wanted = [f"{n}-{i}" for n in committed for i in range(300)]
    assert ResponseCache(path).get_many(wanted) == dict.fromkeys(wanted, "v" * 2000)
    merge(path)
    assert integrity(path) == "ok" and list(shard_folder(path).iterdir()) == []
    assert len(ResponseCache(path).get_many(wanted)) == len(wanted)


def test_a_cache_written_before_shards_is_read_and_merged(tmp_path):
    path = tmp_path / "judge.sqlite"
    with sqlite3.connect(path) as db:  # the layout of the single-file cache
        db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.executemany("INSERT INTO responses VALUES (?, ?)", [("a", "old a"), ("b", "old b")])
    db.close()
    cache = ResponseCache(path)
    assert cache.get_many(["a", "b"]) == {"a": "old a", "b": "old b"}
    cache.put("a", "new a")  # the newest answer wins, here and after the merge
    assert cache.get("a") == "new a"
    cache.close()
    assert ResponseCache(path).get_many(["a", "b"]) == {"a": "new a", "b": "old b"}
    assert merge(path) == 1
    assert ResponseCache(path).get_many(["a", "b"]) == {"a": "new a", "b": "old b"}


def test_the_newest_answer_wins_across_shards(tmp_path):
    path = tmp_path / "judge.sqlite"
    first, second = ResponseCache(path), ResponseCache(path)
    first.put("k", "unusable")
    second.put("k", "replacement")
    assert ResponseCache(path).get("k") == "replacement"
    first.close()
    second.close()
    merge(path)
    assert ResponseCache(path).get("k") == "replacement"


def test_batches_are_pending_until_collected_in_any_process(tmp_path):
    path = tmp_path / "judge.sqlite"
    submitter = ResponseCache(path)
    submitter.add_batch("batch_a", ["k1", "k2"])
    submitter.add_batch("batch_b", ["k3"])
    collector = ResponseCache(path)
    assert collector.pending_batches() == {"batch_a": ["k1", "k2"], "batch_b": ["k3"]}
    collector.finish_batch("batch_a")
    assert collector.pending_batches() == {"batch_b": ["k3"]}
    assert ResponseCache(path).pending_batches() == {"batch_b": ["k3"]}
    submitter.close()
    collector.close()
    merge(path)
    assert ResponseCache(path).pending_batches() == {"batch_b": ["k3"]}


def test_merge_leaves_the_shards_of_running_writers(tmp_path):
    path = tmp_path / "judge.sqlite"
    running = ResponseCache(path)
    running.put("k", "v")
    assert merge(path) == 0 and len(list(shard_folder(path).glob("*.sqlite"))) == 1
    running.close()
    cli(["cache-merge", str(path)])
    assert list(shard_folder(path).glob("*.sqlite")) == [] and ResponseCache(path).get("k") == "v"


def test_merging_a_cache_that_was_never_written_does_nothing(tmp_path):
    assert merge(tmp_path / "absent" / "judge.sqlite") == 0
    assert list(tmp_path.iterdir()) == []


def test_one_merge_at_a_time(tmp_path, caplog):
    path = tmp_path / "judge.sqlite"
    cache = ResponseCache(path)
    cache.put("k", "v")
    cache.close()
    Path(f"{path}.merging").mkdir()  # another merge runs
    with caplog.at_level(logging.WARNING):
        assert merge(path) == 0
    assert "another merge is running" in caplog.text and not path.exists()
    Path(f"{path}.merging").rmdir()
    assert merge(path, everything=True) == 1
