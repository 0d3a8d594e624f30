"""The API judge in batch mode (`mode: batch`) against the loopback server's Batch API
(tests/llm_server.py): the same results as online mode, one cache for both, a killed job that
collects its batch instead of paying again, expired batches, failed lines and failed batches."""

import json
import logging
import subprocess
import sys
import threading
import time

import numpy as np
import openai
import pytest
from llm_server import ANSWERS, QUESTION, BatchPlan

from valuedrift.behaviour.judges.llm import ApiJudge
from valuedrift.io import InputError
from valuedrift.llm.api import ApiError

KEY_ENV = "VALUEDRIFT_TEST_API_KEY"
KEY = "sk-test-batch-7e2d"
# one answer repeated: a deterministic request is sent once, in either mode
TEXTS = [ANSWERS["support"], ANSWERS["oppose"], ANSWERS["neutral"], ANSWERS["support"], "Yes, I agree.",
         "I reject it entirely.", "Perhaps."]
DISTINCT = len(set(TEXTS))
CHILD = """
import json, sys
from valuedrift.behaviour.judges.llm import ApiJudge
settings, question, texts = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
ApiJudge.from_settings("api", settings).predict_proba([question] * len(texts), texts)
"""


@pytest.fixture
def settings(server, monkeypatch, tmp_path):
    server.reset()
    monkeypatch.setenv(KEY_ENV, KEY)

    def make(**overrides) -> dict:
        return {"model": "judge-model", "base_url": server.base_url, "api_key_env": KEY_ENV, "mode": "batch",
                "cache": str(tmp_path / "judge.sqlite"), "batch_poll_interval": 0.05, **overrides}

    return make


def judged(settings: dict, texts=TEXTS) -> np.ndarray:
    return ApiJudge.from_settings("api", settings).predict_proba([QUESTION] * len(texts), texts)


@pytest.fixture
def online(settings, server, tmp_path) -> tuple[np.ndarray, list[dict]]:
    """The online judge's probabilities and the request bodies it sent (its own cache)."""
    probs = judged(settings(mode="online", cache=str(tmp_path / "online.sqlite")))
    bodies = [r["body"] for r in server.requests]
    server.reset()
    return probs, bodies


def uploaded(server, batch_id: str) -> list[dict]:
    return server.batches[batch_id]["lines"]


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_batch_equals_online_and_shares_its_cache(settings, online, server, caplog):
    probs, bodies = online
    server.plan_batches(BatchPlan(polls=3))
    with caplog.at_level(logging.INFO):
        np.testing.assert_array_equal(judged(settings()), probs)
    assert server.calls == {"files.create": 1, "batches.create": 1, "batches.retrieve": 3, "files.content": 1}
    assert server.requests == []
    lines = uploaded(server, "batch_1")
    # what online mode sends, once per distinct request, under the cache key
    assert sorted(json.dumps(line["body"], sort_keys=True) for line in lines) == \
        sorted(json.dumps(body, sort_keys=True) for body in bodies)
    assert {(line["method"], line["url"]) for line in lines} == {("POST", "/v1/chat/completions")}
    assert len({line["custom_id"] for line in lines}) == DISTINCT == len(bodies)
    # one line per poll that shows progress (the server finishes a third of the lines per poll)
    progress = [r.getMessage() for r in caplog.records if "requests done" in r.getMessage()]
    assert progress == [f"judge-model: {DISTINCT * i // 3}/{DISTINCT} requests done, {i // 3}/1 batches finished"
                        for i in (1, 2, 3)]
    assert KEY not in caplog.text
    # a rerun sends nothing, in either mode
    server.reset()
    np.testing.assert_array_equal(judged(settings()), probs)
    np.testing.assert_array_equal(judged(settings(mode="online")), probs)
    assert server.calls == {} and server.requests == []


def test_a_killed_job_collects_its_batch_instead_of_submitting_again(settings, online, server):
    server.hold_batches(True)
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(settings()), QUESTION, json.dumps(TEXTS)])
    try:
        # the batch is recorded before its first poll
        wait_for(lambda: server.calls["batches.retrieve"] >= 1 or child.poll() is not None)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -9, "killed while it waited for its batch"
    assert server.batches["batch_1"]["batch"]["status"] in ("validating", "in_progress")
    server.hold_batches(False)
    np.testing.assert_array_equal(judged(settings()), online[0])
    assert server.calls["batches.create"] == 1 and server.calls["files.create"] == 1
    assert server.requests == []


def test_an_expired_batch_is_collected_and_only_the_rest_submitted_again(settings, online, server, caplog):
    server.plan_batches(BatchPlan(expire_after=2))
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(judged(settings()), online[0])
    first, second = uploaded(server, "batch_1"), uploaded(server, "batch_2")
    assert [line["custom_id"] for line in second] == [line["custom_id"] for line in first[2:]]
    assert server.calls["batches.create"] == 2
    assert f"{DISTINCT - 2} of {DISTINCT} requests got no answer ({DISTINCT - 2} x batch_expired)" in caplog.text


def test_batches_that_keep_expiring_stop_after_batch_rounds(settings, online, server):
    server.plan_batches(BatchPlan(expire_after=1), BatchPlan(expire_after=1))
    with pytest.raises(ApiError) as caught:
        judged(settings(batch_rounds=2))
    message = str(caught.value)
    assert message.startswith(f"API endpoint {server.base_url} (model 'judge-model'): ")
    assert f"{DISTINCT - 2} of {DISTINCT} requests got no answer in 2 batch round(s) ({DISTINCT - 2} x batch_expired)" \
        in message and "raise ApiSettings.batch_rounds" in message and KEY not in message
    # the lines that were done are cached: a rerun asks only for the rest
    np.testing.assert_array_equal(judged(settings()), online[0])
    assert len(uploaded(server, "batch_3")) == DISTINCT - 2


def test_failed_lines_go_into_a_new_batch(settings, online, server):
    # HTTP 500 in the error file, then an error without a response
    server.plan_batches(BatchPlan(failed_lines=2, line_status=500), BatchPlan(failed_lines=1, line_status=None))
    np.testing.assert_array_equal(judged(settings()), online[0])
    assert [len(uploaded(server, f"batch_{i}")) for i in (1, 2, 3)] == [DISTINCT, 2, 1]
    assert server.requests == []


def test_lines_that_fail_every_round_are_one_message(settings, server):
    server.plan_batches(BatchPlan(failed_lines=1, line_status=429), BatchPlan(failed_lines=1, line_status=429))
    unanswered = rf"1 of {DISTINCT} requests got no answer in 2 batch round\(s\) \(1 x HTTP 429\)"
    with pytest.raises(ApiError, match=unanswered):
        judged(settings(batch_rounds=2))


def test_a_line_refused_for_good_stops_at_once(settings, server):
    server.plan_batches(BatchPlan(failed_lines=1, line_status=404))
    refused = "HTTP 404 in batch batch_1 — no such model or route; check model and base_url"
    with pytest.raises(ApiError, match=refused):
        judged(settings())
    assert server.calls["batches.create"] == 1, "not submitted again"
    # the other lines are cached
    judged(settings())
    assert len(uploaded(server, "batch_2")) == 1


@pytest.mark.parametrize("kind", ["nan", "no_logprobs", "no_choices"])
def test_an_unusable_reply_is_the_message_online_mode_gives(settings, server, kind):
    messages = []
    for mode in ("online", "batch"):
        server.malform_next(kind)
        with pytest.raises(ApiError) as caught:
            judged(settings(mode=mode, max_retries=0), [ANSWERS["support"]])
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert server.calls["batches.create"] == 1 and len(server.requests) == 1


def test_a_failed_batch_names_its_id_and_errors(settings, server):
    server.plan_batches(BatchPlan(fail=True))
    with pytest.raises(ApiError, match=r"batch batch_1 failed \(invalid_request: injected validation failure "
                                       r"\(line 1\)\); the 0 line\(s\) it answered are cached"):
        judged(settings())


def test_a_cancelled_batch_stops_the_job_and_a_rerun_submits_again(settings, online, server):
    server.hold_batches(True)
    raised = []

    def job():
        try:
            judged(settings())
        except ApiError as e:
            raised.append(str(e))

    worker = threading.Thread(target=job)
    worker.start()
    wait_for(lambda: server.calls["batches.retrieve"] >= 1)
    openai.OpenAI(api_key=KEY, base_url=server.base_url).batches.cancel("batch_1")  # as from the dashboard
    server.hold_batches(False)
    worker.join(timeout=30)
    assert len(raised) == 1 and "batch batch_1 cancelled (no errors reported)" in raised[0]
    np.testing.assert_array_equal(judged(settings()), online[0])
    assert server.calls["batches.create"] == 2


def test_a_recorded_batch_the_endpoint_forgot_is_submitted_again(settings, online, server, caplog):
    server.hold_batches(True)
    result = []
    worker = threading.Thread(target=lambda: result.append(judged(settings())))
    with caplog.at_level(logging.WARNING):
        worker.start()
        wait_for(lambda: server.calls["batches.retrieve"] >= 1)
        server.batches.clear()  # a batch deleted, or one recorded against another endpoint
        server.hold_batches(False)
        worker.join(timeout=30)
    np.testing.assert_array_equal(result[0], online[0])
    assert "batch batch_1, recorded in the cache" in caplog.text and "is unknown to" in caplog.text
    assert server.calls["batches.create"] == 2


def test_batch_mode_needs_a_cache(settings):
    with pytest.raises(InputError, match="mode batch needs `cache`"):
        judged(settings(cache=None))
    with pytest.raises(InputError, match="mode must be one of online, batch"):
        judged(settings(mode="offline"))


def test_a_jobs_snapshot_files_go_into_one_batch(settings, server, tmp_path):
    """`valuedrift judge` over a run's snapshot files (different answers in each) sends one batch, not
    one per file (each could wait up to a day), and writes each file the online judge's probabilities."""
    from valuedrift.cli import main as cli
    from valuedrift.io import read_jsonl, write_jsonl

    files = [[f"{text} ({k})" for text in TEXTS] for k in range(3)]
    expected = [judged(settings(mode="online", cache=str(tmp_path / "online.sqlite")), texts) for texts in files]
    server.reset()
    inputs, outputs = [tmp_path / f"{k}.jsonl" for k in range(3)], [tmp_path / f"stances-{k}.jsonl" for k in range(3)]
    for path, texts in zip(inputs, files):
        write_jsonl(path, [{"question_id": i, "question": QUESTION, "answer": text} for i, text in enumerate(texts)])
    server.plan_batches(BatchPlan(polls=1))
    cli(["judge", "--generations", *map(str, inputs), "--judge", "api", "--judge-settings",
         json.dumps({"kind": "openai_api", **settings()}), "--output", *map(str, outputs)])
    assert server.calls["batches.create"] == 1
    assert len(uploaded(server, "batch_1")) == 3 * DISTINCT
    for output, probs in zip(outputs, expected):
        rows = read_jsonl(output)
        np.testing.assert_array_equal([[r["p_support"], r["p_neutral"], r["p_oppose"]] for r in rows], probs)
