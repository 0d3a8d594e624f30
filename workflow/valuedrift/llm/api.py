"""A chat model behind an OpenAI-compatible API (OpenAI itself, or a local vLLM server).

Requests run in a thread pool of `concurrency` workers; the `openai` client retries rate limits
(429), server errors (5xx) and dropped connections with exponential backoff, up to `max_retries`
times. With `cache` set, every answer is stored under its namespace, model, request parameters
and messages, so a rerun sends only the requests that never got an answer.

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
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from valuedrift.io import InputError
from valuedrift.llm.cache import ResponseCache

log = logging.getLogger(__name__)

Messages = list[dict]

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

    def __post_init__(self):
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


class ApiClient:
    def __init__(self, settings: ApiSettings, namespace: str = ""):
        """`namespace` separates cached answers of different callers (a judge's name and version)."""
        from openai import OpenAI

        self.settings = settings
        self.namespace = namespace
        self.cache = ResponseCache(settings.cache) if settings.cache else None
        self._key = api_key(settings)
        self._client = OpenAI(api_key=self._key, base_url=settings.base_url,
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

    def _cached(self, key: str, check: Callable[[str], object]) -> str | None:
        """The cached answer, or None to request it. An answer cached before answers were checked may
        be unusable (NaN logprobs); it counts as a miss, so the new answer replaces it instead of the
        user having to find and delete it."""
        answer = self.cache.get(key) if self.cache is not None else None
        if answer is None:
            return None
        try:
            check(answer)
        except Unusable as e:
            log.warning("%s: requesting again an unusable cached answer: %s", self.settings.model, e)
            return None
        return answer

    def _run(self, prompts: list[Messages], params: dict, parse: Callable[[object], str],
             check: Callable[[str], object] = lambda answer: None) -> list[str]:
        """One request per prompt, answers in input order; cached answers that pass `check` (which
        raises `Unusable`) are not requested again."""
        keys = self._keys(prompts, params)
        results: list[str | None] = [self._cached(k, check) for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        if len(todo) < len(prompts):
            log.info("%d of %d answers from the cache %s", len(prompts) - len(todo), len(prompts), self.settings.cache)
        every = max(1, len(todo) // 10)
        pool = ThreadPoolExecutor(max_workers=self.settings.concurrency)
        try:
            futures = {pool.submit(self._request, prompts[i], params, parse): i for i in todo}
            for done, future in enumerate(as_completed(futures), start=1):
                i = futures[future]
                results[i] = future.result()
                if self.cache is not None:
                    self.cache.put(keys[i], results[i])
                if len(todo) >= 20 and done % every == 0:
                    log.info("%s: %d/%d requests done", self.settings.model, done, len(todo))
        finally:
            # on a failure, drop the queued requests instead of sending them; answers received so
            # far are already cached for the rerun
            pool.shutdown(wait=True, cancel_futures=True)
        return results  # type: ignore[return-value]

    def _request(self, messages: Messages, params: dict, parse: Callable[[object], str]) -> str:
        import openai

        s = self.settings
        attempts = f"{s.max_retries + 1} attempt(s)"
        try:
            response = self._client.chat.completions.create(model=s.model, messages=messages, **params)
        except openai.APITimeoutError as e:  # before APIConnectionError, its parent class
            raise self._error(f"no reply within the timeout of {s.timeout:g} s ({attempts}) — is the server "
                              f"overloaded? raise ApiSettings.timeout or lower concurrency") from e
        except openai.APIConnectionError as e:
            raise self._error(f"cannot connect ({e.__cause__ or e}; {attempts}) — is the server running? "
                              f"check base_url") from e
        except openai.APIStatusError as e:  # what retries could not mend: 4xx, or 429/5xx every time
            raise self._error(f"HTTP {e.status_code} after {attempts} — {_STATUS_FIX.get(e.status_code, _SERVER_FIX)}"
                              ) from e
        except json.JSONDecodeError as e:  # a body sent as application/json that is not JSON
            raise self._error(f"the reply is not JSON but {_snippet(e.doc)} — base_url must point at an "
                              f"OpenAI-compatible API (usually ending in /v1)") from e
        try:
            return parse(response)
        except Unusable as e:
            raise self._error(str(e)) from None

    def _error(self, problem: str) -> ApiError:
        message = f"API endpoint {self.settings.base_url} (model {self.settings.model!r}): {problem}"
        # a proxy's error page may echo the request's headers: the key never reaches a message
        if self.settings.api_key_env is not None:
            message = message.replace(self._key, "***")
        return ApiError(message)
