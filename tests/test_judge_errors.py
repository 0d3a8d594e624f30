"""Nothing wrong passes silently: an unreachable endpoint, a malformed reply or a probability that is
no probability stops the run with one message saying where and what, and is never cached or written.
API cases talk HTTP to the loopback server (tests/llm_server.py), which malforms replies on demand."""

import json
import logging
import math
import socket
import sqlite3

import numpy as np
import pytest
from llm_server import ANSWERS, LOGPROBS, QUESTION

from valuedrift import STANCES
from valuedrift.behaviour.judges import JUDGES
from valuedrift.behaviour.judges.llm import ApiJudge
from valuedrift.cli import main as cli
from valuedrift.io import InputError, write_jsonl
from valuedrift.llm.api import ApiError, ApiSettings
from valuedrift.llm.cache import merge

KEY_ENV = "VALUEDRIFT_TEST_API_KEY"
KEY = "sk-test-secret-4f9a"


@pytest.fixture
def api_judge(server, monkeypatch):
    server.reset()
    monkeypatch.setenv(KEY_ENV, KEY)

    def make(**settings):
        settings = {"model": "judge-model", "base_url": server.base_url, "api_key_env": KEY_ENV,
                    "max_retries": 0, "concurrency": 1, **settings}
        return ApiJudge.from_settings("api", settings)

    return make


def refusal(judge, answer=ANSWERS["support"]) -> str:
    """The message of the ApiError that judging `answer` raises; it names the endpoint and model
    and never shows the key."""
    with pytest.raises(ApiError) as caught:
        judge.predict_proba([QUESTION], [answer])
    message = str(caught.value)
    settings = judge.client.settings
    assert f"API endpoint {settings.base_url} (model 'judge-model')" in message
    assert KEY not in message
    return message


def cached_answers(path) -> list[str]:
    """Every answer in the cache, its shards merged into the main file first."""
    merge(path, everything=True)
    if not path.exists():  # nothing was ever cached
        return []
    with sqlite3.connect(path) as db:
        return [value for (value,) in db.execute("SELECT value FROM responses")]


# -- probabilities that are no probabilities -------------------------------------------------------

def test_nan_logprobs_are_refused(api_judge, server):
    server.malform_next("nan")
    message = refusal(api_judge())
    assert "the logprob of token 'support' is NaN" in message and "finite logprobs" in message


def test_minus_infinity_is_probability_zero(api_judge, server):
    # the oppose reply lists "support" once; at -Infinity, support gets probability 0 and the
    # other labels share the rest as before
    server.malform_next("-inf:support")
    probs = api_judge().predict_proba([QUESTION], [ANSWERS["oppose"]])[0]
    assert probs[0] == 0.0
    scores = np.array([math.log(math.exp(-0.3) + math.exp(-2.1)), -2.4])
    np.testing.assert_allclose(probs[1:][::-1], np.exp(scores) / np.exp(scores).sum(), rtol=1e-12)
    assert [t for t, _ in LOGPROBS["oppose"]].count("support") == 1


def test_labels_all_at_minus_infinity_are_refused(api_judge, server):
    server.malform_next("-inf")
    message = refusal(api_judge())
    assert "every label (support, neutral, oppose) has probability 0" in message
    assert "cannot be normalised" in message


def test_a_refused_answer_is_not_cached_and_a_rerun_requests_it(api_judge, server, tmp_path):
    cache = tmp_path / "judge.sqlite"
    server.malform_next("nan")
    refusal(api_judge(cache=str(cache)))
    assert cached_answers(cache) == []
    probs = api_judge(cache=str(cache)).predict_proba([QUESTION], [ANSWERS["support"]])
    assert len(server.requests) == 2 and probs[0].argmax() == 0
    assert len(cached_answers(cache)) == 1


def test_an_unusable_cached_answer_is_requested_again(api_judge, server, tmp_path):
    cache = tmp_path / "judge.sqlite"
    good = api_judge(cache=str(cache)).predict_proba([QUESTION], [ANSWERS["neutral"]])
    # an answer cached by a client that did not check answers
    assert len(cached_answers(cache)) == 1
    with sqlite3.connect(cache) as db:
        db.execute("UPDATE responses SET value = ?", (json.dumps([["neutral", math.nan], ["support", -1.7]]),))
    again = api_judge(cache=str(cache)).predict_proba([QUESTION], [ANSWERS["neutral"]])
    assert len(server.requests) == 2
    np.testing.assert_array_equal(again, good)
    assert "NaN" not in cached_answers(cache)[0]


# -- transport and parse errors --------------------------------------------------------------------

def test_a_refused_connection_is_one_message(api_judge):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    message = refusal(api_judge(base_url=f"http://127.0.0.1:{port}/v1"))
    assert "cannot connect (" in message and "Connection refused" in message
    assert "is the server running? check base_url" in message


def test_a_timeout_is_one_message_after_the_retries(api_judge, server):
    server.malform_next("slow", "slow")
    message = refusal(api_judge(timeout=0.2, max_retries=1))
    assert len(server.requests) == 2, "the client's retries come first"
    assert "no reply within the timeout of 0.2 s (2 attempt(s))" in message and "ApiSettings.timeout" in message


def test_an_html_page_is_one_message(api_judge, server):
    server.malform_next("html")
    message = refusal(api_judge())
    assert "the reply is not a chat completion but '<!DOCTYPE html><html><head><title>Sign in" in message
    assert "OpenAI-compatible API" in message
    # the same page labelled application/json fails in the client's JSON parser instead
    server.malform_next("html_as_json")
    message = refusal(api_judge())
    assert "the reply is not JSON but '<!DOCTYPE html><html><head><title>Sign in" in message
    assert "OpenAI-compatible API" in message


def test_no_choices_is_one_message(api_judge, server):
    server.malform_next("no_choices")
    assert "the reply has no choices" in refusal(api_judge())
    # generation reads the same choices
    server.malform_next("no_choices")
    with pytest.raises(ApiError, match="the reply has no choices"):
        api_judge().client.complete([[{"role": "user", "content": "hi"}]])


def test_null_top_logprobs_is_one_message(api_judge, server):
    server.malform_next("null_top_logprobs")
    message = refusal(api_judge())
    assert "the reply's first token has no top_logprobs — the server must return top_logprobs" in message


def test_missing_logprobs_is_one_message(api_judge, server):
    server.malform_next("no_logprobs")
    assert "the reply has no logprobs — the server must return logprobs" in refusal(api_judge())


def test_the_cli_prints_the_message_without_a_traceback(api_judge, server, tmp_path, caplog):
    generations = tmp_path / "gen.jsonl"
    write_jsonl(generations, [{"question_id": "q1", "question": QUESTION, "answer": ANSWERS["support"]}])
    settings = {"kind": "openai_api", "model": "judge-model", "base_url": server.base_url,
                "api_key_env": KEY_ENV, "max_retries": 0}
    server.malform_next("nan")
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as caught:
        cli(["judge", "--generations", str(generations), "--judge", "api", "--judge-settings", json.dumps(settings),
             "--output", str(tmp_path / "stances.jsonl")])
    assert caught.value.code == 2
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR][0].startswith(
        f"API endpoint {server.base_url} (model 'judge-model'): the logprob of token 'support' is NaN")
    assert not (tmp_path / "stances.jsonl").exists()


# -- the key -----------------------------------------------------------------------------------------

def test_a_key_given_as_api_key_env_is_refused_and_not_shown():
    pasted = "sk-proj-Abc123xyz789"
    with pytest.raises(InputError) as caught:
        ApiJudge.from_settings("api", {"model": "m", "api_key_env": pasted})
    message = str(caught.value)
    assert "must be the name of an environment variable" in message and "put the key in that variable" in message
    assert pasted not in message and "Abc123" not in message
    assert ApiSettings(api_key_env="MY_KEY_2").api_key_env == "MY_KEY_2"


# -- the judge command, for any kind of judge ----------------------------------------------------------

class FixedJudge:
    """A judge of a kind registered by the test, answering every question with the same row."""

    def __init__(self, name, p):
        self.name, self.version, self.p = name, "fixed-1", p

    @classmethod
    def from_settings(cls, name, settings, model_dir=None):
        return cls(name, settings["p"])

    def predict_proba(self, questions, answers):
        return np.array([self.p] * len(questions), dtype=np.float64)


@pytest.mark.parametrize("p, shown", [([math.nan, 0.5, 0.5], "[nan, 0.5, 0.5]"),
                                      ([0.5, 0.5, 0.5], "[0.5, 0.5, 0.5]"),
                                      ([1.5, -0.5, 0.0], "[1.5, -0.5, 0.0]")])
def test_judge_refuses_rows_that_are_no_distribution(tmp_path, monkeypatch, p, shown):
    monkeypatch.setitem(JUDGES, "fixed", f"{__name__}:FixedJudge")
    generations = tmp_path / "gen.jsonl"
    write_jsonl(generations, [{"question_id": f"q{i}", "question": QUESTION, "answer": "Yes."} for i in range(3)])
    from valuedrift.behaviour import judge

    settings = json.dumps({"kind": "fixed", "p": p})
    args = judge.make_parser().parse_args(["--generations", str(generations), "--judge", "odd",
                                           "--judge-settings", settings, "--output", str(tmp_path / "s.jsonl")])
    with pytest.raises(InputError) as caught:
        judge.main(args)
    assert str(caught.value) == (
        f"{generations}: row 1 (question_id q0): judge 'odd' (version fixed-1) gave p(support, neutral, oppose) = "
        f"{shown}, not a distribution (finite, within [0, 1], summing to 1) — check the judge's model and "
        f"settings; nothing was written")
    assert not (tmp_path / "s.jsonl").exists()


# -- aggregation ---------------------------------------------------------------------------------------

def stance_row(i, **p):
    return {"model": "m", "sft_data": "s", "algorithm": "dpo", "pref_data": "p", "phase": "pref", "k": 1, "step": 10,
            "fraction": 1.0, "judge": "j", "judge_version": "v", "prompts_version": "pv", "topic": "t",
            "question_id": f"q{i}", **{f"p_{s}": 1 / 3 for s in STANCES}, **p}


@pytest.mark.parametrize("bad, shown", [({"p_neutral": math.nan}, "p_neutral is NaN"),
                                        ({"p_oppose": None}, "p_oppose is null")])
def test_aggregate_refuses_a_missing_probability_naming_file_and_line(tmp_path, bad, shown):
    good = tmp_path / "good.jsonl"
    write_jsonl(good, [stance_row(i) for i in range(2)])
    broken = tmp_path / "broken.jsonl"
    # line 2 is blank: the message counts lines, not rows
    broken.write_text("\n".join([json.dumps(stance_row(0)), "", json.dumps(stance_row(1, **bad))]) + "\n")
    with pytest.raises(InputError) as caught:
        cli_aggregate(tmp_path, good, broken)
    assert str(caught.value) == f"{broken}:3: {shown}, not a finite number — judge this snapshot again"
    assert not (tmp_path / "q.parquet").exists()


def test_aggregate_refuses_a_row_without_the_probability(tmp_path):
    broken = tmp_path / "broken.jsonl"
    row = stance_row(1)
    del row["p_support"]
    write_jsonl(broken, [stance_row(0), row])
    with pytest.raises(InputError, match=f"^{broken}:2: p_support is missing, not a finite number"):
        cli_aggregate(tmp_path, broken)


def cli_aggregate(tmp_path, *stances):
    from valuedrift.analysis import aggregate

    aggregate.main(aggregate.make_parser().parse_args(
        [*map(str, stances), "--by-question", str(tmp_path / "q.parquet"), "--distributions",
         str(tmp_path / "d.parquet"), "--bootstrap-samples", "10"]))
