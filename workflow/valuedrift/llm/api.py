"""A chat model behind an OpenAI-compatible API (OpenAI itself, or a local vLLM server).

Requests run in a thread pool of `concurrency` workers; the `openai` client retries rate limits
(429), server errors (5xx) and dropped connections with exponential backoff, up to `max_retries`
times. With `cache` set, every answer is stored under its namespace, model, request parameters
and messages, so a rerun sends only the requests that never got an answer.

The key is read only from the environment variable named by `api_key_env`, never from a file.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from valuedrift.io import InputError
from valuedrift.llm.cache import ResponseCache

log = logging.getLogger(__name__)

Messages = list[dict]


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
    return top + math.log(sum(math.exp(v - top) for v in values))


def softmax(scores: np.ndarray) -> np.ndarray:
    z = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def label_distribution(top: Sequence[tuple[str, float]], labels: Sequence[str]) -> np.ndarray:
    """Probabilities of `labels` from the first token's top alternatives [(token, logprob)].

    Tokens that spell a label up to whitespace and case ("Support", " support") share its mass.
    """
    if not top:
        raise InputError("the API returned no top_logprobs; the server must support logprobs for label scoring")
    # a token absent from the top list is at most as likely as the least likely listed one, so that
    # logprob is an upper bound on an absent label's mass; a tenth of the bound keeps the label below
    # every listed one without declaring it impossible
    floor = min(lp for _, lp in top) - math.log(10)
    scores = []
    for label in labels:
        matched = [lp for token, lp in top if token.strip().lower() == label.strip().lower()]
        scores.append(logsumexp(matched) if matched else floor)
    return softmax(np.array(scores, dtype=np.float64))


def _top_logprobs(response) -> str:
    choice = response.choices[0]
    if choice.logprobs is None or not choice.logprobs.content:
        raise InputError(f"model {response.model!r} returned no logprobs; label scoring needs a server that does")
    return json.dumps([[t.token, t.logprob] for t in choice.logprobs.content[0].top_logprobs])


def _text(response) -> str:
    return response.choices[0].message.content or ""


class ApiClient:
    def __init__(self, settings: ApiSettings, namespace: str = ""):
        """`namespace` separates cached answers of different callers (a judge's name and version)."""
        from openai import OpenAI

        self.settings = settings
        self.namespace = namespace
        self.cache = ResponseCache(settings.cache) if settings.cache else None
        self._client = OpenAI(api_key=api_key(settings), base_url=settings.base_url,
                              max_retries=settings.max_retries, timeout=settings.timeout)

    def label_probabilities(self, prompts: list[Messages], labels: Sequence[str]) -> np.ndarray:
        """Array (n, len(labels)): the softmax over the labels of the reply's first token."""
        s = self.settings
        params = {"max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": s.top_logprobs}
        tops = self._run(prompts, params, _top_logprobs)
        rows = [label_distribution([tuple(t) for t in json.loads(top)], labels) for top in tops]
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

    def _run(self, prompts: list[Messages], params: dict, parse: Callable[[object], str]) -> list[str]:
        """One request per prompt, answers in input order; cached answers are not requested again."""
        keys = self._keys(prompts, params)
        results: list[str | None] = [self.cache.get(k) if self.cache is not None else None for k in keys]
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
        return parse(self._client.chat.completions.create(model=self.settings.model, messages=messages, **params))
