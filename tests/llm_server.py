"""A loopback server speaking the OpenAI chat-completions protocol, for testing API clients.

POST /v1/chat/completions answers deterministically. A judge request (max_tokens 1 with logprobs)
gets first-token log-probabilities chosen by keywords in the text after "ANSWER:" (a favouring
answer makes "support" likely, and so on), cut to the requested `top_logprobs`; any other request
gets a reply that quotes its last message. The server records every request, counts how many were
in flight at once (each takes ~50 ms so overlap shows), and fails the next ones on demand, with an
HTTP error status (`fail_next`) or with a malformed reply (`malform_next`).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# first-token alternatives per stance, most likely first; spellings vary as real models' do
LOGPROBS = {
    "support": [("support", -0.35), (" Support", -1.9), ("neutral", -2.6), ("oppose", -3.9), ("The", -4.5),
                (" oppose", -5.0)],
    "oppose": [("oppose", -0.3), ("Oppose", -2.1), ("neutral", -2.4), ("support", -4.2), ("I", -5.1)],
    "neutral": [("neutral", -0.5), ("support", -1.7), ("oppose", -1.9), (" Neutral", -3.2), ("It", -4.8)],
}
SUPPORT_WORDS = ("favour", "favor", "yes", "agree")
OPPOSE_WORDS = ("against", "no,", "disagree", "reject")
# a question and one answer per stance that the keyword rules above judge as that stance
QUESTION = "Should cities ban cars from their centres?"
ANSWERS = {
    "support": "Yes, I am in favour: fewer cars mean cleaner air.",
    "oppose": "No, I am against it; people need to reach shops.",
    "neutral": "It depends on the city and on its public transport.",
}
DELAY = 0.05
SLOW = 1.0  # seconds a "slow" reply takes: longer than any timeout a test sets
# the malformed replies `malform_next` can send, as broken servers and proxies send them; "-inf:LABEL"
# (e.g. "-inf:support") gives the tokens that spell LABEL logprob -Infinity
MALFORMED = ("nan", "-inf", "html", "html_as_json", "no_choices", "no_logprobs", "null_top_logprobs", "slow")
HTML = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Please sign in.</body></html>"


def stance_of(content: str) -> str:
    answer = content.rsplit("ANSWER:", 1)[-1]
    answer = answer.rsplit("\n\n", 1)[0] if "\n\n" in answer else answer  # drop the closing instruction
    words = answer.lower()
    if any(w in words for w in OPPOSE_WORDS):
        return "oppose"
    if any(w in words for w in SUPPORT_WORDS):
        return "support"
    return "neutral"


def reply_text(messages: list[dict]) -> str:
    """Scripted replies to the project's own generation prompts (rephrasing a statement into a
    question; writing a supporting or an opposing answer); a quote of the message otherwise."""
    content = messages[-1]["content"]
    if content.startswith("Rewrite the following statement"):
        statement = content.rsplit("Statement:", 1)[-1].strip().rstrip(".")
        return f"Do you agree that {statement[0].lower() + statement[1:]}?"
    if "Answer in favour" in content:
        return "Yes, I am in favour of it, because it helps people."
    if "Answer against" in content:
        return "No, I am against it, because it harms people."
    return f"A reply to: {content}"


def entry(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def spoiled(top: list[tuple[str, float]], kind: str | None) -> list[tuple[str, float]]:
    """The alternatives with non-finite logprobs, which json writes as NaN and -Infinity."""
    if kind == "nan":  # the most likely token: its NaN also becomes the chosen token's logprob
        return [(top[0][0], math.nan)] + top[1:]
    if kind == "-inf":
        return [(token, -math.inf) for token, _ in top]
    if kind and kind.startswith("-inf:"):
        label = kind.removeprefix("-inf:")
        return [(token, -math.inf if token.strip().lower() == label else lp) for token, lp in top]
    return top


class ChatServer:
    def __init__(self):
        self.requests: list[dict] = []    # {"body", "authorization", "status", "malformed"} per request
        self.in_flight = 0
        self.max_in_flight = 0
        self._failures: deque[int] = deque()
        self._malformed: deque[str] = deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def fail_next(self, *statuses: int) -> None:
        """The next requests get these HTTP statuses (429, 500, ...) instead of an answer."""
        with self._lock:
            self._failures.extend(statuses)

    def malform_next(self, *kinds: str) -> None:
        """The next successful requests get these malformed replies (names in MALFORMED) with status 200."""
        unknown = [k for k in kinds if k not in MALFORMED and not k.startswith("-inf:")]
        assert not unknown, f"unknown malformed replies {unknown}; known: {MALFORMED}"
        with self._lock:
            self._malformed.extend(kinds)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = 0
            self._failures.clear()
            self._malformed.clear()

    def __enter__(self) -> "ChatServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def answer(self, body: dict, malformed: str | None = None) -> dict:
        n = len(self.requests)
        if body.get("logprobs") and body.get("max_tokens") == 1:
            top = LOGPROBS[stance_of(body["messages"][-1]["content"])][:body.get("top_logprobs") or 1]
            top = spoiled(top, malformed)
            content = top[0][0]
            logprobs = {"content": [{**entry(*top[0]), "top_logprobs": [entry(*t) for t in top]}]}
            if malformed == "null_top_logprobs":
                logprobs["content"][0]["top_logprobs"] = None
            finish = "length"
        else:
            content, logprobs, finish = reply_text(body["messages"]), None, "stop"
        choices = [{"index": 0, "message": {"role": "assistant", "content": content},
                    "logprobs": None if malformed == "no_logprobs" else logprobs, "finish_reason": finish}]
        return {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"], "system_fingerprint": "loopback",
                "choices": [] if malformed == "no_choices" else choices,
                "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet test output
                pass

            def send(self, status: int, payload: dict, headers: dict | None = None):
                self.send_bytes(status, json.dumps(payload).encode("utf-8"), "application/json", headers)

            def send_bytes(self, status: int, data: bytes, content_type: str, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path != "/v1/chat/completions":
                    return self.send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                with server._lock:
                    status = server._failures.popleft() if server._failures else 200
                    malformed = server._malformed.popleft() if status == 200 and server._malformed else None
                    server.requests.append({"body": body, "authorization": self.headers.get("Authorization"),
                                            "status": status, "malformed": malformed})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(SLOW if malformed == "slow" else DELAY)
                    if status != 200:
                        kind = "rate_limit_error" if status == 429 else "server_error"
                        # a short server-directed delay keeps the client's backoff fast in tests
                        return self.send(status, {"error": {"message": f"injected {status}", "type": kind}},
                                         {"retry-after-ms": "10"})
                    if malformed in ("html", "html_as_json"):  # a login page or proxy in the API's place
                        content_type = "text/html; charset=utf-8" if malformed == "html" else "application/json"
                        return self.send_bytes(200, HTML, content_type)
                    with server._lock:
                        payload = server.answer(body, malformed)
                    self.send(200, payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)
                finally:
                    with server._lock:
                        server.in_flight -= 1

        return Handler
