"""Progress bars for the long stages, readable in a job's log.

A job's stderr is its log file, which keeps every redraw of a bar. Two shapes keep it readable:
`batches` for fast loops that log nothing inside (redrawn at most every TQDM_MININTERVAL seconds,
which `valuedrift.cli` sets where stderr is a file), and `items` for slow loops over snapshots or
files that log as they go (redrawn once an item, the log lines printed above the bar rather than
into it). Bars never nest: a bar inside another would move the cursor with escape codes, which a
log file keeps as noise.
"""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def batches(iterable: Iterable[T], desc: str) -> Iterator[T]:
    from tqdm import tqdm

    yield from tqdm(iterable, desc=desc, unit="batch")


def items(iterable: Iterable[T], desc: str, unit: str = "snapshot") -> Iterator[T]:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    values = list(iterable)
    with logging_redirect_tqdm(), tqdm(values, desc=desc, unit=unit, mininterval=0) as bar:
        yield from bar
