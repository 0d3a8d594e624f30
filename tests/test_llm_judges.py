"""LLM judges against real protocols: the API judge talks HTTP to a loopback OpenAI-compatible
server (tests/llm_server.py); the local judge runs the tiny chat model built by the `tiny` fixture."""

import math

import numpy as np
import pytest
from llm_server import ANSWERS, LOGPROBS, QUESTION

from valuedrift import STANCES
from valuedrift.behaviour.judges.llm import PROMPT, ApiJudge, LocalLLMJudge, judge_messages, judge_version
from valuedrift.io import InputError
from valuedrift.llm.api import ApiClient, ApiSettings
from valuedrift.llm.cache import ResponseCache

KEY_ENV = "VALUEDRIFT_TEST_API_KEY"


def logsumexp(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def by_hand(top):
    """The expected judge output from the server's (token, logprob) list."""
    floor = min(lp for _, lp in top) - math.log(10)
    scores = []
    for label in STANCES:
        lps = [lp for tok, lp in top if tok.strip().lower() == label]
        scores.append(logsumexp(lps) if lps else floor)
    z = np.exp(np.array(scores) - max(scores))
    return z / z.sum()


@pytest.fixture
def api_judge(server, monkeypatch):
    server.reset()
    monkeypatch.setenv(KEY_ENV, "sk-test-123")

    def make(name="api", **settings):
        settings = {"model": "judge-model", "base_url": server.base_url, "api_key_env": KEY_ENV, **settings}
        return ApiJudge.from_settings(name, settings)

    return make


def test_api_probabilities_are_the_softmax_of_the_servers_logprobs(api_judge, server):
    stances = ["support", "oppose", "neutral", "support"]
    probs = api_judge().predict_proba([QUESTION] * 4, [ANSWERS[s] for s in stances])
    assert probs.shape == (4, 3)
    for row, stance in zip(probs, stances):
        np.testing.assert_allclose(row, by_hand(LOGPROBS[stance]), rtol=1e-12)
        assert STANCES[row.argmax()] == stance
    # "support" and " Support" are one label: merged, support's mass exceeds its bare token's
    support_only = math.exp(-0.35) / (math.exp(-0.35) + math.exp(-2.6) + math.exp(logsumexp([-3.9, -5.0])))
    assert probs[0, 0] > support_only
    for request in server.requests:
        body = request["body"]
        assert (body["model"], body["max_tokens"], body["temperature"]) == ("judge-model", 1, 0)
        assert body["logprobs"] is True and body["top_logprobs"] == 20
    # requests arrive in any order; each answer was asked about once, in the judge prompt (the
    # repeated one too: a deterministic request is sent once, so a rerun's cached answer is the same)
    sent = sorted(r["body"]["messages"][0]["content"] for r in server.requests)
    assert sent == sorted({m[0]["content"] for m in judge_messages([QUESTION] * 4, [ANSWERS[s] for s in stances])})


def test_api_label_missing_from_top_logprobs_gets_a_small_share(api_judge):
    # with 3 alternatives the server lists support, " Support", neutral: no oppose
    probs = api_judge(top_logprobs=3).predict_proba([QUESTION], [ANSWERS["support"]])[0]
    top = LOGPROBS["support"][:3]
    floor = -2.6 - math.log(10)
    scores = np.array([logsumexp([-0.35, -1.9]), -2.6, floor])
    np.testing.assert_allclose(probs, np.exp(scores) / np.exp(scores).sum(), rtol=1e-12)
    np.testing.assert_allclose(probs, by_hand(top), rtol=1e-12)
    assert 0 < probs[2] < probs[1]


def test_api_retries_rate_limits_and_server_errors(api_judge, server):
    server.fail_next(429, 429, 500)
    probs = api_judge(concurrency=1).predict_proba([QUESTION], [ANSWERS["oppose"]])
    np.testing.assert_allclose(probs[0], by_hand(LOGPROBS["oppose"]), rtol=1e-12)
    assert [r["status"] for r in server.requests] == [429, 429, 500, 200]


def test_api_gives_up_after_max_retries(api_judge, server):
    from valuedrift.llm.api import ApiError

    server.fail_next(429, 429, 429)
    with pytest.raises(ApiError, match="HTTP 429 after 3 attempt.*lower concurrency"):
        api_judge(concurrency=1, max_retries=2).predict_proba([QUESTION], [ANSWERS["oppose"]])
    assert len(server.requests) == 3
    server.fail_next(404)
    with pytest.raises(ApiError, match="HTTP 404 .* check model and base_url"):
        api_judge(concurrency=1, max_retries=0).predict_proba([QUESTION], [ANSWERS["support"]])


def test_api_concurrency_is_bounded_and_order_kept(api_judge, server):
    stances = [STANCES[i % 3] for i in range(16)]
    probs = api_judge(concurrency=4).predict_proba([QUESTION] * 16, [ANSWERS[s] for s in stances])
    assert 1 < server.max_in_flight <= 4
    assert [STANCES[i] for i in probs.argmax(axis=1)] == stances
    server.reset()
    api_judge(concurrency=1).predict_proba([QUESTION] * 4, [ANSWERS["neutral"]] * 4)
    assert server.max_in_flight == 1


def test_api_cache_answers_a_rerun_without_requests(api_judge, server, tmp_path):
    cache = str(tmp_path / "cache" / "judge.sqlite")
    answers = [ANSWERS[s] for s in STANCES]
    first = api_judge(cache=cache).predict_proba([QUESTION] * 3, answers)
    assert len(server.requests) == 3
    again = api_judge(cache=cache).predict_proba([QUESTION] * 3, answers)
    assert len(server.requests) == 3, "a rerun sends no request that already has an answer"
    np.testing.assert_array_equal(first, again)
    # one new answer: only it is requested
    api_judge(cache=cache).predict_proba([QUESTION] * 4, answers + ["Yes, I agree."])
    assert len(server.requests) == 4
    # another model is another judge version: nothing of the first judge's is reused
    other = api_judge(cache=cache, model="other-model")
    assert other.version != api_judge().version
    other.predict_proba([QUESTION] * 3, answers)
    assert len(server.requests) == 7


def test_api_cache_is_separated_by_namespace(server, tmp_path):
    settings = ApiSettings(model="m", base_url=server.base_url, api_key_env=None, cache=str(tmp_path / "c.sqlite"))
    server.reset()
    prompts = [[{"role": "user", "content": "hello"}]]
    assert ApiClient(settings, namespace="judge-a:v1").complete(prompts, temperature=0) == ["A reply to: hello"]
    ApiClient(settings, namespace="judge-a:v1").complete(prompts, temperature=0)
    assert len(server.requests) == 1
    ApiClient(settings, namespace="judge-a:v2").complete(prompts, temperature=0)
    assert len(server.requests) == 2


def test_api_complete_keeps_order_and_caches_each_sample(server, tmp_path):
    settings = ApiSettings(model="m", base_url=server.base_url, api_key_env=None, concurrency=3,
                           cache=str(tmp_path / "c.sqlite"))
    server.reset()
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(6)] + [[{"role": "user", "content": "question 0"}]]
    texts = ApiClient(settings).complete(prompts, max_tokens=20, temperature=0.7)
    assert texts == [f"A reply to: question {i}" for i in range(6)] + ["A reply to: question 0"]
    # a repeated prompt is a second sample, so it was requested too; a rerun requests nothing
    assert len(server.requests) == 7
    assert ApiClient(settings).complete(prompts, max_tokens=20, temperature=0.7) == texts
    assert len(server.requests) == 7
    assert server.requests[0]["body"]["max_tokens"] == 20 and server.requests[0]["body"]["temperature"] == 0.7


def test_api_key_comes_from_the_named_variable(api_judge, server, monkeypatch):
    api_judge().predict_proba([QUESTION], [ANSWERS["neutral"]])
    assert server.requests[-1]["authorization"] == "Bearer sk-test-123"
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(InputError, match=KEY_ENV):
        api_judge()
    # a server without keys (a local vLLM) gets a placeholder
    api_judge(api_key_env=None).predict_proba([QUESTION], [ANSWERS["neutral"]])
    assert server.requests[-1]["authorization"] == "Bearer EMPTY"


def test_api_settings_are_checked():
    with pytest.raises(InputError, match="unknown ApiSettings setting"):
        ApiJudge.from_settings("api", {"modle": "x"})


def test_response_cache_round_trip(tmp_path):
    cache = ResponseCache(tmp_path / "deep" / "c.sqlite")
    key = ResponseCache.key("ns", {"b": 1, "a": 2}, [1, 2])
    assert key == ResponseCache.key("ns", {"a": 2, "b": 1}, [1, 2]) != ResponseCache.key("ns", {"a": 2}, [1, 2])
    assert cache.get(key) is None
    cache.put(key, "value")
    assert ResponseCache(tmp_path / "deep" / "c.sqlite").get(key) == "value"


def test_judge_version_follows_the_model_and_prompt():
    assert judge_version("a") == judge_version("a") != judge_version("b")
    assert "{question}" in PROMPT and "{answer}" in PROMPT


# -- the local judge, on the tiny chat model -------------------------------------------------------

LOCAL_ANSWERS = ["Yes.", "No, I am against banning cars because people need to reach the shops in town.",
                 "It depends.", "I agree with it, since the air would be cleaner.", "Maybe.",
                 "I think that it would be a very bad idea for most of the cities that I know well."]


@pytest.fixture(scope="module")
def local_judge(tiny):
    return LocalLLMJudge.from_settings("tiny_judge", {"batch_size": 4}, model_dir=str(tiny / "base"))


def test_local_probabilities_are_distributions_and_batching_is_invisible(local_judge):
    questions = [QUESTION] * len(LOCAL_ANSWERS)
    batched = local_judge.predict_proba(questions, LOCAL_ANSWERS)
    assert batched.shape == (len(LOCAL_ANSWERS), 3)
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, atol=1e-6)
    assert (batched > 0).all()
    one_by_one = np.concatenate([local_judge.predict_proba([q], [a]) for q, a in zip(questions, LOCAL_ANSWERS)])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert local_judge.name == "tiny_judge" and len(local_judge.version) == 12


def test_local_probabilities_match_a_hand_computation(local_judge, tiny):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny / "base")
    model = AutoModelForCausalLM.from_pretrained(tiny / "base", dtype=torch.float32).eval()
    messages = [{"role": "user", "content": PROMPT.format(question=QUESTION, answer=LOCAL_ANSWERS[1])}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    with torch.no_grad():
        logits = model(**tokenizer(ids, return_tensors="pt", add_special_tokens=False)).logits[0, -1]
    scores = []
    for label in STANCES:
        firsts = {tokenizer(v, add_special_tokens=False)["input_ids"][0]
                  for v in (label, " " + label, label.capitalize())}
        scores.append(torch.logsumexp(logits[sorted(firsts)], dim=0))
    expected = torch.softmax(torch.stack(scores), dim=0).numpy()
    np.testing.assert_allclose(local_judge.predict_proba([QUESTION], [LOCAL_ANSWERS[1]])[0], expected, atol=1e-5)


def test_local_labels_sharing_a_first_token_are_refused(local_judge):
    with pytest.raises(InputError, match="share the first token"):
        local_judge.model.label_probabilities(judge_messages([QUESTION], ["Yes."]), ["support", "Support"])


def test_local_complete_is_deterministic_at_temperature_zero(local_judge):
    prompts = [[{"role": "user", "content": q}] for q in (QUESTION, "Is it right to raise taxes?", "Hi")]
    model = local_judge.model
    greedy = model.complete(prompts, max_tokens=12, temperature=0)
    assert len(greedy) == 3 and all(isinstance(t, str) for t in greedy)
    assert model.complete(prompts, max_tokens=12, temperature=0) == greedy
    assert model.complete(prompts[:1], max_tokens=12, temperature=0) == greedy[:1]
    sampled = model.complete(prompts, max_tokens=12, temperature=1.0, seed=3)
    assert model.complete(prompts, max_tokens=12, temperature=1.0, seed=3) == sampled


def test_api_transport_travels_outside_the_params_and_is_joined_again(monkeypatch):
    """How answers are fetched (endpoint, concurrency, retries, cache, batch mode) leaves the params
    Snakemake compares, so changing it reruns nothing, and comes back from the environment."""
    import json

    from valuedrift.llm.api import TRANSPORT_ENV, split_transport, with_transport

    spec = {"kind": "openai_api", "model": "gpt-4o", "top_logprobs": 20, "base_url": "http://proxy:8000/v1",
            "concurrency": 16, "cache": "results/cache/judge.sqlite", "mode": "batch"}
    params, transport = split_transport(spec, "judges.gpt4o")
    assert params == {"kind": "openai_api", "model": "gpt-4o", "top_logprobs": 20, "transport": "judges.gpt4o"}
    monkeypatch.setenv(TRANSPORT_ENV, json.dumps({"judges.gpt4o": transport}))
    assert with_transport(params) == spec
    monkeypatch.delenv(TRANSPORT_ENV)
    with pytest.raises(InputError, match="through snakemake"):
        with_transport(params)
    local = {"kind": "local_llm", "model": "Qwen/Qwen3-8B"}
    assert split_transport(local, "judges.qwen_judge") == (local, {}) and with_transport(local) == local
