"""Requests through the OpenAI Batch API (`ApiSettings.mode: batch`): half the price of online
requests, a quota of its own, and answers within a 24-hour completion window.

A round: the requests without an answer become JSONL lines {custom_id: the cache key, method, url,
body: what online mode would send}, uploaded (`files.create`, purpose batch) and submitted
(`batches.create`) in batches of at most `batch_max_requests`. Each batch id is recorded in the
cache, with the keys it answers, before its status is first polled. Every `batch_poll_interval`
seconds each batch's status is polled, with progress in the log, until it reaches a terminal
status; then its output and error files are read, each reply with the parser and checks of online
mode (so both modes give the same answers to the same replies), the answers are cached and the
batch is marked collected.

- Resuming: a restarted job finds the batches recorded for its missing keys and collects those
  instead of submitting them again. A crash between `batches.create` returning and the record
  being written (milliseconds) is the one window in which a batch can be paid for twice.
- Expired batches: the lines that were done are collected, the rest go into the next round.
- Failed lines (in the error file, or a status of 429 or 5xx) also go into the next round: a new
  batch rather than online requests, because batch mode is chosen for its price and its quota (as
  many requests online would meet the rate limits batch mode avoids), and these are the transient
  failures a later try gets through, as online mode's retries do. Lines refused for good (any
  other 4xx) and unusable replies stop the run with the message online mode gives. Requests still
  without an answer after `batch_rounds` rounds stop the run, naming why.
- A batch that failed (say, invalid input) or was cancelled stops the run with its id and errors,
  after the lines it did finish are cached.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Callable, Iterator

from valuedrift.llm.api import Unusable, status_fix

if TYPE_CHECKING:
    from openai.types import Batch

    from valuedrift.llm.api import ApiClient

log = logging.getLogger(__name__)

URL = "/v1/chat/completions"
TERMINAL = ("completed", "expired", "failed", "cancelled")
# seconds for an upload or a download: a batch's file may hold up to 200 MB, more than `timeout`
# (meant for one reply) lets through
TRANSFER_TIMEOUT = 600.0


def run_batches(api: ApiClient, todo: dict[str, dict], parse: Callable[[object], str]) -> dict[str, str]:
    """Answers to the request bodies `todo` (cache key -> body), each cached as its batch is collected."""
    rounds = api.settings.batch_rounds
    answers: dict[str, str] = {}
    why: dict[str, str] = {}  # key -> why it has no answer yet
    for round_ in range(1, rounds + 1):
        missing = {key: body for key, body in todo.items() if key not in answers}
        if round_ > 1:
            log.warning("%s: %d of %d requests got no answer (%s); submitting them again (round %d of %d)",
                        api.settings.model, len(missing), len(todo), _summary(why, missing), round_, rounds)
        batches = _attach(api, missing)
        covered = {key for keys in batches.values() for key in keys}
        batches.update(_submit(api, {key: body for key, body in missing.items() if key not in covered}))
        for batch in _wait(api, batches):
            got, failed = _collect(api, batch, parse, missing)
            answers.update(got)
            why.update(failed)
        if all(key in answers for key in todo):
            return answers
    missing = {key: body for key, body in todo.items() if key not in answers}
    raise api.error(f"{len(missing)} of {len(todo)} requests got no answer in {rounds} batch round(s) "
                    f"({_summary(why, missing)}) — run the job again later, or raise ApiSettings.batch_rounds")


def _summary(why: dict[str, str], missing: dict) -> str:
    counts = Counter(why.get(key, "no line in the batch's results") for key in missing)
    return ", ".join(f"{n} x {reason}" for reason, n in counts.most_common())


def _attach(api: ApiClient, missing: dict[str, dict]) -> dict[str, list[str]]:
    """The batches, submitted earlier and recorded in the cache, that answer some missing request."""
    pending = api.cache.pending_batches()
    batches = {batch: keys for batch, keys in pending.items() if not missing.keys().isdisjoint(keys)}
    for batch, keys in batches.items():
        log.info("%s: collecting batch %s (%d request(s)), submitted earlier", api.settings.model, batch, len(keys))
    return batches


def _submit(api: ApiClient, requests: dict[str, dict]) -> dict[str, list[str]]:
    """Submits `requests` (cache key -> body) in batches of at most `batch_max_requests`; each
    batch is recorded in the cache as soon as it exists."""
    items = list(requests.items())
    size = api.settings.batch_max_requests
    batches = {}
    for chunk in (items[start:start + size] for start in range(0, len(items), size)):
        lines = "".join(json.dumps({"custom_id": key, "method": "POST", "url": URL, "body": body}) + "\n"
                        for key, body in chunk)
        with api.calling():
            upload = api.openai.files.create(file=("requests.jsonl", lines.encode("utf-8")), purpose="batch",
                                             timeout=TRANSFER_TIMEOUT)
            batch = api.openai.batches.create(input_file_id=upload.id, endpoint=URL, completion_window="24h")
        keys = [key for key, _ in chunk]
        api.cache.add_batch(batch.id, keys)
        log.info("%s: submitted batch %s (%d request(s))", api.settings.model, batch.id, len(keys))
        batches[batch.id] = keys
    return batches


def _wait(api: ApiClient, batches: dict[str, list[str]]) -> Iterator[Batch]:
    """Each batch once it reaches a terminal status, polling every `batch_poll_interval` seconds."""
    total = sum(len(keys) for keys in batches.values())
    waiting = set(batches)
    done: dict[str, int] = {}  # batch id -> its requests done
    shown = None
    while waiting:
        finished = []
        for batch_id in sorted(waiting):
            batch = _retrieve(api, batch_id)
            if batch is None:  # unknown to the endpoint: nothing to collect
                waiting.discard(batch_id)
                continue
            counts = batch.request_counts
            done[batch_id] = counts.completed + counts.failed if counts else 0
            if batch.status in TERMINAL:
                waiting.discard(batch_id)
                finished.append(batch)
        progress = (sum(done.values()), len(batches) - len(waiting))
        if progress != shown:  # a line per change, not per poll
            log.info("%s: %d/%d requests done, %d/%d batches finished", api.settings.model, progress[0], total,
                     progress[1], len(batches))
            shown = progress
        yield from finished
        if waiting:
            time.sleep(api.settings.batch_poll_interval)


def _retrieve(api: ApiClient, batch_id: str) -> Batch | None:
    """The batch's state; None for a batch the endpoint does not know (its requests are then
    submitted again in the next round)."""
    import openai

    with api.calling():
        try:
            return api.openai.batches.retrieve(batch_id)
        except openai.NotFoundError:
            pass
    log.warning("%s: batch %s, recorded in the cache %s, is unknown to %s; its requests count as unanswered",
                api.settings.model, batch_id, api.settings.cache, api.settings.base_url)
    api.cache.finish_batch(batch_id)
    return None


def _collect(api: ApiClient, batch: Batch, parse: Callable[[object], str],
             wanted: dict[str, dict]) -> tuple[dict[str, str], dict[str, str]]:
    """The answers in a finished batch's files (all cached) and, per line to try again, why it
    failed. Raises what online mode raises for a line refused for good or an unusable reply that
    `wanted` asks for, once the rest are cached."""
    answers, retry, refusals = {}, {}, []
    for line in _lines(api, batch.output_file_id) + _lines(api, batch.error_file_id):
        key, response = line.get("custom_id"), line.get("response") or {}
        status = response.get("status_code")
        if status == 200:
            try:
                answers[key] = parse(_completion(response.get("body")))
            except Unusable as e:
                refusals.append((key, str(e)))
        elif status is not None and status != 429 and status < 500:
            refusals.append((key, f"HTTP {status} in batch {batch.id} — {status_fix(status)}"))
        else:  # the error file's expired or failed lines, and transient statuses
            retry[key] = (line.get("error") or {}).get("code") or f"HTTP {status}"
    api.cache.put_many(answers.items())
    api.cache.finish_batch(batch.id)
    if batch.status in ("failed", "cancelled"):
        errors = "; ".join(f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "")
                           for e in ((batch.errors.data or []) if batch.errors else []))
        raise api.error(f"batch {batch.id} {batch.status} ({errors or 'no errors reported'}); "
                        f"the {len(answers)} line(s) it answered are cached — fix what the errors say "
                        f"and run the job again")
    for key, problem in refusals:
        if key in wanted:
            raise api.error(problem)
    return answers, retry


def _lines(api: ApiClient, file_id: str | None) -> list[dict]:
    if not file_id:
        return []
    with api.calling():
        content = api.openai.files.content(file_id, timeout=TRANSFER_TIMEOUT).content
        return [json.loads(line) for line in content.decode("utf-8").splitlines() if line.strip()]


def _completion(body):
    """The reply as the openai client builds it from an online response, so that both modes parse
    the same object: a chat completion from a JSON object, anything else as it is."""
    from openai.types.chat import ChatCompletion

    return ChatCompletion.construct(**body) if isinstance(body, dict) else body
