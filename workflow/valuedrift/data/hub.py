"""Hub datasets for the real study, normalized into the project's schemas.

Each loader reads one public dataset (from the hub, a local copy of it, or one data file with the
hub's columns) and returns rows in one of three schemas, the ones the miniature world writes
(`valuedrift.world.datasets`), so the training and evaluation stages read real and synthetic data
alike:

- sft (wildchat, alpaca):
    {"prompt": [{"role": "user", "content": str}],
     "completion": [{"role": "assistant", "content": str}], "source", "source_id"}
- preference (ultrafeedback, hh_rlhf):
    {"prompt": [messages], "chosen": [{"role": "assistant", "content": str}],
     "rejected": [{"role": "assistant", "content": str}], "source", "source_id"}
- prompts (prism):
    {"prompt_id": str, "text": str, "conversation_type": str, "source": "prism"}

`source` is the loader's name. `source_id` is the dataset's own id for the row (WildChat's
conversation_hash, UltraFeedback's prompt_id) or, for the datasets without one (Alpaca, HH-RLHF),
the row's 0-based index in its split, as a string.

What each loader takes from its dataset:
- wildchat (allenai/WildChat-1M): the first user message and the first assistant reply; toxic
  conversations are dropped.
- alpaca (tatsu-lab/alpaca): prompt = instruction, plus a blank line and the input when there is
  one; completion = output.
- ultrafeedback (HuggingFaceH4/ultrafeedback_binarized, split train_prefs): prompt = the messages
  before the final assistant message, which must be the same in `chosen` and `rejected`; chosen and
  rejected = the final assistant messages.
- hh_rlhf (Anthropic/hh-rlhf): the "\\n\\nHuman: ... \\n\\nAssistant: ..." transcripts parsed into
  messages, then as for ultrafeedback; with `single_turn`, only dialogues with a single human turn.
- prism (HannahRoseKirk/prism-alignment, config conversations): each conversation's opening prompt.

Rows are visited in a seeded random order and kept until `size` of them pass the filters:
- length: the prompt (its messages' text together) and every answer, stripped of surrounding
  whitespace, hold between `min_chars` and `max_chars` characters;
- language: WildChat names each conversation's language in a column, and that column decides. The
  other datasets have no such column; for them `language: English` keeps rows whose letters (in the
  prompt and answers together) are at least 95 % ASCII; a row without letters passes. This cheap test
  drops text in non-Latin scripts (Chinese, Russian, Arabic, ...) and tolerates an accented name
  in English text, but lets through languages written mostly in ASCII (Spanish, French, German).
  No other language can be told apart this way, so asking for one is an InputError.

A malformed row stops the load with a DataError naming the file (or hub id and split), the row's
1-based number in its split, and what is wrong.
"""

from __future__ import annotations

import collections
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from valuedrift.io import DataError, InputError

log = logging.getLogger(__name__)

KIND = {"wildchat": "sft", "alpaca": "sft", "ultrafeedback": "preference", "hh_rlhf": "preference",
        "prism": "prompts"}
# datasets whose rows name their own language; the others fall back on the ASCII test
LANGUAGE_COLUMN = frozenset({"wildchat"})
ASCII_SHARE = 0.95
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
# an empty CSV field is an empty string (Alpaca's `input`), not a missing value
BUILDER_OPTIONS = {"csv": {"keep_default_na": False}}
PRISM_CONVERSATION_TYPES = ("unguided", "values guided", "controversy guided")
# rows are fetched this many at a time: one random access per row is slow on a million-row split
BATCH = 1000


@dataclass(frozen=True)
class HubSource:
    """One dataset to load and how to subsample it (see the module docstring)."""

    loader: str                 # wildchat | alpaca | ultrafeedback | hh_rlhf | prism
    path: str                   # hub id, local folder, or data file (.jsonl/.json/.parquet/.csv)
    split: str = "train"
    name: str | None = None     # the dataset's config name on the hub (PRISM: "conversations")
    size: int | None = None     # rows to keep after filtering (None: all)
    seed: int = 0               # seeds the deterministic subsample
    min_chars: int = 1          # length filter on the prompt and on every answer
    max_chars: int = 4000
    language: str | None = "English"   # keep rows in this language (None: no filter)
    single_turn: bool = True    # hh_rlhf: keep only one-turn dialogues (else the history is the prompt)

    def __post_init__(self):
        # checked here so that a bad setting fails before a large download, not after it
        if self.loader not in LOADERS:
            raise InputError(f"unknown hub loader {self.loader!r}; known loaders: {', '.join(LOADERS)}")
        if self.language not in (None, "English") and self.loader not in LANGUAGE_COLUMN:
            raise InputError(f"language: {self.language!r} cannot be selected in {self.loader}, which has "
                             f"no language column; use English (ASCII test) or null (no filter)")
        if self.size is not None and self.size < 0:
            raise InputError(f"size: must be at least 0 or null, got {self.size}")
        if self.min_chars > self.max_chars:
            raise InputError(f"min_chars ({self.min_chars}) exceeds max_chars ({self.max_chars})")


class _Malformed(Exception):
    """A normalizer's complaint about a row; load_rows adds where the row is."""


class _Skip(Exception):
    """A row a filter removes; the argument is the reason that is counted in the log."""


# --- reading fields -------------------------------------------------------------------------------

def _get(row: dict, key: str, kind: type):
    value = row.get(key)
    if value is None:
        raise _Malformed(f"field {key!r} is missing or null")
    if not isinstance(value, kind):
        raise _Malformed(f"field {key!r} is {type(value).__name__}, expected {kind.__name__}")
    return value


def _messages(value: list, key: str) -> list[dict]:
    """{role, content} messages as the project writes them; the hub's extra keys are dropped."""
    messages = []
    for i, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise _Malformed(f"{key}[{i}] is not a message with a string role and content")
        messages.append({"role": m["role"], "content": m["content"]})
    return messages


def _split_answer(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(shared history, chosen answer, rejected answer) of a preference pair."""
    for key, messages in (("chosen", chosen), ("rejected", rejected)):
        if not messages or messages[-1]["role"] != "assistant":
            raise _Malformed(f"{key} does not end with an assistant message")
    if chosen[:-1] != rejected[:-1]:
        raise _Malformed("chosen and rejected have different histories before the final answer")
    if not chosen[:-1] or chosen[0]["role"] != "user":
        raise _Malformed("the history before the final answer does not start with a user message")
    return chosen[:-1], chosen[-1:], rejected[-1:]


# --- one normalizer per dataset: hub row -> project row -----------------------------------------

def wildchat(row: dict, index: int, source: HubSource) -> dict:
    messages = _messages(_get(row, "conversation", list), "conversation")
    if not messages:
        raise _Malformed("empty conversation")
    if messages[0]["role"] != "user":
        raise _Malformed(f"conversation starts with role {messages[0]['role']!r}, not user")
    if len(messages) < 2 or messages[1]["role"] != "assistant":
        raise _Malformed("no assistant reply to the first user message")
    if _get(row, "toxic", bool):
        raise _Skip("toxic")
    if source.language is not None and _get(row, "language", str) != source.language:
        raise _Skip("language")
    return {"prompt": messages[:1], "completion": messages[1:2], "source": "wildchat",
            "source_id": _get(row, "conversation_hash", str)}


def alpaca(row: dict, index: int, source: HubSource) -> dict:
    instruction, extra = _get(row, "instruction", str), _get(row, "input", str)
    prompt = f"{instruction}\n\n{extra}" if extra else instruction
    return {"prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": _get(row, "output", str)}],
            "source": "alpaca", "source_id": str(index)}


def ultrafeedback(row: dict, index: int, source: HubSource) -> dict:
    chosen = _messages(_get(row, "chosen", list), "chosen")
    rejected = _messages(_get(row, "rejected", list), "rejected")
    prompt, chosen, rejected = _split_answer(chosen, rejected)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": "ultrafeedback",
            "source_id": _get(row, "prompt_id", str)}


_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def _transcript(text: str, key: str) -> list[dict]:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> [user a, assistant b]; a turn's text may hold blank lines."""
    parts = _TURN.split(text)
    if parts[0].strip() or len(parts) == 1:
        raise _Malformed(f"{key} is not a transcript starting with '\\n\\nHuman:'")
    return [{"role": _ROLE[role], "content": content.strip()} for role, content in zip(parts[1::2], parts[2::2])]


def hh_rlhf(row: dict, index: int, source: HubSource) -> dict:
    chosen = _transcript(_get(row, "chosen", str), "chosen")
    rejected = _transcript(_get(row, "rejected", str), "rejected")
    prompt, chosen, rejected = _split_answer(chosen, rejected)
    if source.single_turn and len(prompt) > 1:
        raise _Skip("multi_turn")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": "hh_rlhf",
            "source_id": str(index)}


def prism(row: dict, index: int, source: HubSource) -> dict:
    kind = _get(row, "conversation_type", str)
    if kind not in PRISM_CONVERSATION_TYPES:
        raise _Malformed(f"conversation_type {kind!r} is not one of {', '.join(PRISM_CONVERSATION_TYPES)}")
    return {"prompt_id": _get(row, "conversation_id", str), "text": _get(row, "opening_prompt", str),
            "conversation_type": kind, "source": "prism"}


LOADERS: dict[str, Callable[[dict, int, HubSource], dict]] = {
    "wildchat": wildchat, "alpaca": alpaca, "ultrafeedback": ultrafeedback, "hh_rlhf": hh_rlhf, "prism": prism,
}


# --- filters on the normalized row --------------------------------------------------------------

def _texts(row: dict, kind: str) -> list[str]:
    """[prompt, *answers] of a normalized row: the texts the filters judge."""
    if kind == "prompts":
        return [row["text"]]
    answers = [row["completion"]] if kind == "sft" else [row["chosen"], row["rejected"]]
    return ["\n".join(m["content"] for m in row["prompt"]), *(a[0]["content"] for a in answers)]


def _looks_english(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return not letters or sum(c.isascii() for c in letters) >= ASCII_SHARE * len(letters)


def _filtered_out(row: dict, source: HubSource) -> str | None:
    """Why a filter removes the row, or None to keep it."""
    texts = _texts(row, KIND[source.loader])
    if any(len(t.strip()) < source.min_chars for t in texts):
        return "too_short"
    if any(len(t.strip()) > source.max_chars for t in texts):
        return "too_long"
    # the texts are judged together: a short prompt with one accented name ("crème brûlée") alone
    # would fall under the threshold
    if source.language == "English" and source.loader not in LANGUAGE_COLUMN and not _looks_english("".join(texts)):
        return "language"
    return None


# --- loading --------------------------------------------------------------------------------------

def open_dataset(path: str | os.PathLike, split: str = "train", name: str | None = None):
    """The split as a `datasets.Dataset`. A local data file is read whole, as the hub's split
    (its `split` and `name` do not apply); a local folder or hub id goes to `load_dataset`. A
    missing path that cannot be a hub id (`_looks_local`) is an InputError, not a hub lookup."""
    from datasets import load_dataset

    local = Path(path).expanduser()
    # load_dataset takes any name it cannot find locally for a hub id, and its hub error would not
    # say that a local path was meant
    if not local.exists() and _looks_local(str(path)):
        raise InputError(_missing(str(path), local))
    if not local.is_file():
        return load_dataset(str(local) if local.exists() else str(path), name, split=split)
    builder = FILE_BUILDERS.get(local.suffix.lower())
    if builder is None:
        raise InputError(f"{path}: cannot read a {local.suffix or 'suffixless'} file; "
                         f"expected one of {', '.join(FILE_BUILDERS)}")
    if local.stat().st_size == 0:
        raise DataError(f"{path}: the data file is empty (0 bytes); {_FILL}")
    try:
        dataset = _read_file(local, builder)
    except Exception as e:  # the builders report unreadable files in many exception types
        raise DataError(f"{path}: cannot be read as {builder}: {e}") from e
    if dataset is None:
        raise DataError(f"{path}: the data file is empty (no rows); {_FILL}")
    return dataset


_FILL = "write the dataset's rows into it, or set the hub source's `path` to the file that holds them"


def _read_file(local: Path, builder: str):
    """The file's rows as a `datasets.Dataset`, or None when it has none (where `load_dataset` would
    only say that split "train" "corresponds to no data": blank lines, a CSV header, `[]`)."""
    from datasets import load_dataset_builder

    if builder == "parquet":
        import pyarrow.parquet as pq

        # the parquet builder fails on a file without rows ("BatchSize must be greater than 0")
        if pq.read_metadata(local).num_rows == 0:
            return None
    reader = load_dataset_builder(builder, data_files=str(local), **BUILDER_OPTIONS.get(builder, {}))
    reader.download_and_prepare()
    if not reader.info.splits["train"].num_examples:
        return None
    return reader.as_dataset(split="train")


def _looks_local(path: str) -> bool:
    """A path no hub id could be: hub ids are `name` or `owner/name`, without a data-file suffix."""
    return (Path(path).suffix.lower() in FILE_BUILDERS or path.startswith(("./", "../", "/", "~"))
            or path.count("/") > 1)


def _missing(path: str, local: Path) -> str:
    return (f"dataset path {path} does not exist (resolved to {os.path.abspath(local)} from the working "
            f"directory {os.getcwd()}); correct the path (relative to that directory, or absolute); "
            f"a hub dataset is named owner/name")


def _where(source: HubSource) -> str:
    if Path(source.path).expanduser().is_file():
        return str(source.path)
    config = f"config {source.name}, " if source.name else ""
    return f"{source.path} ({config}split {source.split})"


def _walk(dataset, order):
    """(index, row) in the given order, fetched a batch at a time."""
    for start in range(0, len(order), BATCH):
        chunk = order[start:start + BATCH].tolist()
        yield from zip(chunk, dataset.select(chunk))


def load_rows(source: HubSource) -> list[dict]:
    """Up to `source.size` normalized rows that pass the filters, in a seeded random order:
    the same source always gives the same rows, and a larger size extends a smaller one."""
    import numpy as np

    dataset = open_dataset(source.path, source.split, source.name)
    where, normalize = _where(source), LOADERS[source.loader]
    order = np.random.default_rng(source.seed).permutation(len(dataset))
    rows, skipped, read = [], collections.Counter(), 0
    for index, raw in _walk(dataset, order):
        if source.size is not None and len(rows) >= source.size:
            break
        read += 1
        try:
            row = normalize(raw, index, source)
            reason = _filtered_out(row, source)
        except _Skip as skip:
            reason = skip.args[0]
        except _Malformed as e:
            raise DataError(f"{where}: row {index + 1}: {e}") from None
        if reason:
            skipped[reason] += 1
        else:
            rows.append(row)
    _report(where, len(dataset), read, rows, skipped, source.size)
    return rows


def _report(where: str, total: int, read: int, rows: list, skipped: collections.Counter, size: int | None):
    reasons = ", ".join(f"{k}: {n}" for k, n in sorted(skipped.items())) or "none"
    log.info("%s: read %d of %d rows, kept %d, skipped %d (%s)", where, read, total, len(rows),
             sum(skipped.values()), reasons)
    if size is not None and len(rows) < size:
        log.warning("%s: only %d rows pass the filters, fewer than size %d", where, len(rows), size)
