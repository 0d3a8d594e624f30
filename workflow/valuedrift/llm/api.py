"""A chat model behind an OpenAI-compatible API (OpenAI itself, or a local vLLM server).

Requests run in a thread pool of `concurrency` workers; the `openai` client retries rate limits
(429), server errors (5xx) and dropped connections with exponential backoff, up to `max_retries`
times. With `mode: batch` they go through the Batch API instead (`valuedrift.llm.batch`): half the
price, answers within 24 hours. With `cache` set, every answer is stored under its namespace,
model, request parameters and messages, so a rerun sends only the requests that never got an
answer; both modes share the cache and read answers the same way, so a cached answer is the same
whichever mode fetched it.

The key is read only from the environment variable named by `api_key_env`, never from a file, and
no message of this module shows it.

A reply that is no usable answer (not JSON, no choices, no logprobs, NaN logprobs) is refused with
an `ApiError` naming the endpoint and model, and is never cached.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from valuedrift.io import InputError
from valuedrift.llm.cache import ResponseCache

log = logging.getLogger(__name__)

Messages = list[dict]
MODES = ("online", "batch")

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ApiError(InputError):
    """An endpoint that cannot be reached, or a reply that is no usable answer; the message names
    the endpoint and model, what happened and the fix."""


class Unusable(ValueError):
    """A reply that cannot be used, described without the endpoint (the client adds it)."""


@dataclass(frozen=True)
class ApiSettings:
    model: str = "gpt-4o"
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str | None = "OPENAI_API_KEY"   # None: a server that needs no key (a local vLLM)
    concurrency: int = 8          # requests in flight at once
    max_retries: int = 6          # per request, with exponential backoff (the openai client's)
    timeout: float = 60.0         # seconds per request attempt
    top_logprobs: int = 20        # alternatives returned for the first token of a label request
    cache: str | None = None      # SQLite file of answers; None: no cache
    mode: str = "online"          # online: one request per answer; batch: the Batch API (needs cache)
    batch_poll_interval: float = 60.0   # seconds between two looks at a submitted batch's status
    batch_rounds: int = 3         # batches per request at most: the first, then again for lines that
                                  # expired or failed
    batch_max_requests: int = 50000     # requests per batch (OpenAI's limit)

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"ApiSettings.mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.mode == "batch" and not self.cache:
            # the cache records the submitted batch: without it a restarted job would pay again
            raise InputError("ApiSettings.mode batch needs `cache` (a file), where submitted batches are recorded "
                             "so that a restarted job collects them instead of submitting them again")
        if self.batch_poll_interval <= 0 or self.batch_rounds < 1 or self.batch_max_requests < 1:
            raise InputError("ApiSettings.batch_poll_interval must be positive, batch_rounds and batch_max_requests "
                             "at least 1")
        if self.concurrency < 1:
            raise InputError(f"ApiSettings.concurrency must be at least 1, got {self.concurrency}")
        if self.top_logprobs < 1:  # OpenAI allows up to 20; a vLLM server up to its --max-logprobs
            raise InputError(f"ApiSettings.top_logprobs must be at least 1, got {self.top_logprobs}")
        name = self.api_key_env
        if name is not None and not (isinstance(name, str) and ENV_NAME.fullmatch(name)):
            # the value is not repeated: what does not look like a variable's name is most likely
            # the key itself, pasted in the wrong place, and messages end up in logs
            raise InputError("ApiSettings.api_key_env must be the name of an environment variable (letters, digits "
                             "and underscores, such as OPENAI_API_KEY), not the key itself: put the key in that "
                             "variable (export OPENAI_API_KEY=...) and set api_key_env to the variable's name")


# Fields that say how answers are fetched, never which answers: the cache keys and judge versions
# leave them out. The workflow hands them to jobs through the environment (TRANSPORT_ENV), outside
# the params Snakemake compares, so that moving to a proxy, raising `concurrency` or switching to
# batch mode after a first attempt reruns no job (a rerun of the V-PRISM build would retrain the
# whole study that depends on it).
TRANSPORT = ("base_url", "api_key_env", "concurrency", "max_retries", "timeout", "cache", "mode",
             "batch_poll_interval", "batch_rounds", "batch_max_requests")
TRANSPORT_ENV = "VALUEDRIFT_API_TRANSPORT"


def split_transport(spec: dict, ref: str) -> tuple[dict, dict]:
    """(the spec with its transport replaced by `transport: ref`, the transport) of an API model;
    other specs unchanged, with no transport."""
    if spec.get("kind") != "openai_api":
        return spec, {}
    return ({**{k: v for k, v in spec.items() if k not in TRANSPORT}, "transport": ref},
            {k: v for k, v in spec.items() if k in TRANSPORT})


def with_transport(spec: dict) -> dict:
    """A spec whose transport the workflow moved into the environment, whole again."""
    ref = spec.get("transport")
    if ref is None:
        return spec
    table = json.loads(os.environ.get(TRANSPORT_ENV) or "{}")
    if ref not in table:
        raise InputError(f"the API settings of {ref} are missing from the environment variable {TRANSPORT_ENV}, "
                         "which the workflow sets; run this job through snakemake")
    return {**{k: v for k, v in spec.items() if k != "transport"}, **table[ref]}


def api_key(settings: ApiSettings) -> str:
    if settings.api_key_env is None:
        return "EMPTY"  # the client insists on a key; servers without authentication ignore it
    key = os.environ.get(settings.api_key_env)
    if not key:
        raise InputError(f"the API key is read from the environment variable {settings.api_key_env}, "
                         f"which is not set — export it, or set api_key_env to null for a server without keys")
    return key


def logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf  # every probability is 0 (and -inf - -inf would be NaN)
    return top + math.log(sum(math.exp(v - top) for v in values))


def softmax(scores: np.ndarray) -> np.ndarray:
    z = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def label_distribution(top: Sequence[tuple[str, float]], labels: Sequence[str]) -> np.ndarray:
    """Probabilities of `labels` from the first token's top alternatives [(token, logprob)].

    Tokens that spell a label up to whitespace and case ("Support", " support") share its mass.
    Raises `Unusable` where the alternatives define no distribution over the labels.
    """
    if not top:
        raise Unusable("the reply's first token has no top_logprobs — the server must return top_logprobs "
                       "for label scoring")
    for token, lp in top:
        # -Infinity is probability 0, which a server reports for a token it rules out; NaN and
        # +Infinity are no probability at all
        if not isinstance(lp, (int, float)) or math.isnan(lp) or lp == math.inf:
            raise Unusable(f"the logprob of token {token!r} is {json.dumps(lp)} — the server must return finite "
                           f"logprobs (or -Infinity); check the model it serves (weights, dtype)")
    # a token absent from the top list is at most as likely as the least likely listed one, so that
    # logprob is an upper bound on an absent label's mass; a tenth of the bound keeps the label below
    # every listed one without declaring it impossible (unless the bound is already 0)
    floor = min(lp for _, lp in top) - math.log(10)
    scores = []
    for label in labels:
        matched = [lp for token, lp in top if token.strip().lower() == label.strip().lower()]
        scores.append(logsumexp(matched) if matched else floor)
    if max(scores) == -math.inf:
        raise Unusable(f"every label ({', '.join(labels)}) has probability 0 (logprob -Infinity), so their "
                       f"distribution cannot be normalised — check the prompt and the model the server serves")
    return softmax(np.array(scores, dtype=np.float64))


def _first_choice(response):
    from openai.types.chat import ChatCompletion

    # for a body that is no JSON object (an HTML page sent as text/html) the client returns the
    # parsed body itself, a str or a list, instead of raising
    if not isinstance(response, ChatCompletion):
        raise Unusable(f"the reply is not a chat completion but {_snippet(response)} — base_url must point at "
                       f"an OpenAI-compatible API (usually ending in /v1), not at a web page or a login proxy")
    if not response.choices:
        raise Unusable("the reply has no choices — the server must answer with at least one choice; check that "
                       "it serves chat completions for this model")
    return response.choices[0]


def _snippet(body) -> str:
    text = " ".join(str(body).split())
    return repr(text[:60] + ("..." if len(text) > 60 else ""))


def _top_logprobs(response) -> list[list]:
    choice = _first_choice(response)
    if choice.logprobs is None or not choice.logprobs.content:
        raise Unusable("the reply has no logprobs — the server must return logprobs for label scoring "
                       "(it was asked with logprobs=true); use a server and model that support them")
    return [[t.token, t.logprob] for t in choice.logprobs.content[0].top_logprobs or []]


def _text(response) -> str:
    choice = _first_choice(response)
    if choice.message is None:
        raise Unusable("the reply's choice has no message — the server must return chat completions")
    return choice.message.content or ""


# the fix for an HTTP error status; the server's own text is left out, since a 401 reply may repeat
# part of the key
_STATUS_FIX = {
    400: "the server refused the request; check that it serves this model and accepts logprobs",
    401: "the key was refused; check the key in the variable named by api_key_env",
    403: "the key may not use this model or endpoint; check its permissions",
    404: "no such model or route; check model and base_url (usually ending in /v1)",
    429: "rate limited every time; lower concurrency, or raise max_retries",
}
_SERVER_FIX = "the server failed every time; try again later, or raise max_retries"


def status_fix(status: int) -> str:
    return _STATUS_FIX.get(status, _SERVER_FIX)


class ApiClient:
    def __init__(self, settings: ApiSettings, namespace: str = ""):
        """`namespace` separates cached answers of different callers (a judge's name and version)."""
        from openai import OpenAI

        self.settings = settings
        self.namespace = namespace
        self.cache = ResponseCache(settings.cache) if settings.cache else None
        self._key = api_key(settings)
        self.openai = OpenAI(api_key=self._key, base_url=settings.base_url,
                           max_retries=settings.max_retries, timeout=settings.timeout)

    def label_probabilities(self, prompts: list[Messages], labels: Sequence[str]) -> np.ndarray:
        """Array (n, len(labels)): the softmax over the labels of the reply's first token."""
        s = self.settings
        params = {"max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": s.top_logprobs}

        def distribution(answer: str) -> np.ndarray:
            return label_distribution(json.loads(answer), labels)

        def parse(response) -> str:
            answer = json.dumps(_top_logprobs(response))
            distribution(answer)  # refused here, an answer without a distribution never reaches the cache
            return answer

        tops = self._run(prompts, params, parse, check=distribution)
        rows = [distribution(top) for top in tops]
        return np.stack(rows) if rows else np.zeros((0, len(labels)))

    def complete(self, prompts: list[Messages], max_tokens: int = 512, temperature: float = 0.7) -> list[str]:
        return self._run(prompts, {"max_tokens": max_tokens, "temperature": temperature}, _text)

    def _keys(self, prompts: list[Messages], params: dict) -> list[str]:
        # sampled replies to repeated prompts are separate samples, so each copy gets its own key;
        # deterministic ones (temperature 0) share one answer
        seen: Counter = Counter()
        keys = []
        for messages in prompts:
            text = json.dumps(messages, sort_keys=True)
            copy = seen[text] if params["temperature"] > 0 else 0
            seen[text] += 1
            keys.append(ResponseCache.key(self.namespace, self.settings.model, params, messages, copy))
        return keys

    def _cached(self, keys: list[str], check: Callable[[str], object]) -> dict[str, str]:
        """The cached answers among `keys`. An answer cached before answers were checked may be
        unusable (NaN logprobs); it counts as a miss, so the new answer replaces it instead of the
        user having to find and delete it."""
        usable = {}
        for key, answer in (self.cache.get_many(keys) if self.cache is not None else {}).items():
            try:
                check(answer)
            except Unusable as e:
                log.warning("%s: requesting again an unusable cached answer: %s", self.settings.model, e)
                continue
            usable[key] = answer
        return usable

    def _run(self, prompts: list[Messages], params: dict, parse: Callable[[object], str],
             check: Callable[[str], object] = lambda answer: None) -> list[str]:
        """One request per prompt, answers in input order; cached answers that pass `check` (which
        raises `Unusable`) are not requested again, nor are repeats of a request (same key)."""
        keys = self._keys(prompts, params)
        answers = self._cached(keys, check)
        todo = {key: self._body(messages, params) for key, messages in zip(keys, prompts) if key not in answers}
        hits = sum(key in answers for key in keys)
        if hits:
            log.info("%d of %d answers from the cache %s", hits, len(prompts), self.settings.cache)
        if todo and self.settings.mode == "batch":
            from valuedrift.llm.batch import run_batches

            answers.update(run_batches(self, todo, parse))
        elif todo:
            answers.update(self._online(todo, parse))
        return [answers[key] for key in keys]

    def _body(self, messages: Messages, params: dict) -> dict:
        """The request's body, the same in both modes."""
        return {"model": self.settings.model, "messages": messages, **params}

    def _online(self, todo: dict[str, dict], parse: Callable[[object], str]) -> dict[str, str]:
        """Answers to the request bodies `todo` (cache key -> body), each cached as it arrives."""
        answers = {}
        every = max(1, len(todo) // 10)
        pool = ThreadPoolExecutor(max_workers=self.settings.concurrency)
        try:
            futures = {pool.submit(self._request, body, parse): key for key, body in todo.items()}
            for done, future in enumerate(as_completed(futures), start=1):
                key = futures[future]
                answers[key] = future.result()
                if self.cache is not None:
                    self.cache.put(key, answers[key])
                if len(todo) >= 20 and done % every == 0:
                    log.info("%s: %d/%d requests done", self.settings.model, done, len(todo))
        finally:
            # on a failure, drop the queued requests instead of sending them; answers received so
            # far are already cached for the rerun
            pool.shutdown(wait=True, cancel_futures=True)
        return answers

    def _request(self, body: dict, parse: Callable[[object], str]) -> str:
        with self.calling():
            response = self.openai.chat.completions.create(**body)
        try:
            return parse(response)
        except Unusable as e:
            raise self.error(str(e)) from None

    @contextmanager
    def calling(self) -> Iterator[None]:
        """Turns what the openai client raises, after its retries, into one `ApiError` each."""
        import openai

        s = self.settings
        attempts = f"{s.max_retries + 1} attempt(s)"
        try:
            yield
        except openai.APITimeoutError as e:  # before APIConnectionError, its parent class
            raise self.error(f"no reply within the timeout of {s.timeout:g} s ({attempts}) — is the server "
                             f"overloaded? raise ApiSettings.timeout or lower concurrency") from e
        except openai.APIConnectionError as e:
            raise self.error(f"cannot connect ({e.__cause__ or e}; {attempts}) — is the server running? "
                             f"check base_url") from e
        except openai.APIStatusError as e:  # what retries could not mend: 4xx, or 429/5xx every time
            raise self.error(f"HTTP {e.status_code} after {attempts} — {status_fix(e.status_code)}") from e
        except json.JSONDecodeError as e:  # a body sent as application/json that is not JSON
            raise self.error(f"the reply is not JSON but {_snippet(e.doc)} — base_url must point at an "
                             f"OpenAI-compatible API (usually ending in /v1)") from e

    def error(self, problem: str) -> ApiError:
        message = f"API endpoint {self.settings.base_url} (model {self.settings.model!r}): {problem}"
        # a proxy's error page may echo the request's headers: the key never reaches a message
        if self.settings.api_key_env is not None:
            message = message.replace(self._key, "***")
        return ApiError(message)
