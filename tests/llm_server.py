"""A loopback server speaking the OpenAI chat-completions protocol, for testing API clients.

POST /v1/chat/completions answers deterministically. A judge request (max_tokens 1 with logprobs)
gets first-token log-probabilities chosen by keywords in the text after "ANSWER:" (a favouring
answer makes "support" likely, and so on), cut to the requested `top_logprobs`; any other request
gets a reply that quotes its last message. The server records every request, counts how many were
in flight at once (each takes ~50 ms so overlap shows), and fails the next ones on demand.
"""

from __future__ import annotations

import json
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
DELAY = 0.05


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


class ChatServer:
    def __init__(self):
        self.requests: list[dict] = []    # {"body", "authorization", "status"} per request seen
        self.in_flight = 0
        self.max_in_flight = 0
        self._failures: deque[int] = deque()
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

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = 0
            self._failures.clear()

    def __enter__(self) -> "ChatServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def answer(self, body: dict) -> dict:
        n = len(self.requests)
        if body.get("logprobs") and body.get("max_tokens") == 1:
            top = LOGPROBS[stance_of(body["messages"][-1]["content"])][:body.get("top_logprobs") or 1]
            content = top[0][0]
            logprobs = {"content": [{**entry(*top[0]), "top_logprobs": [entry(*t) for t in top]}]}
            finish = "length"
        else:
            content, logprobs, finish = reply_text(body["messages"]), None, "stop"
        return {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"], "system_fingerprint": "loopback",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "logprobs": logprobs, "finish_reason": finish}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet test output
                pass

            def send(self, status: int, payload: dict, headers: dict | None = None):
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
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
                    server.requests.append({"body": body, "authorization": self.headers.get("Authorization"),
                                            "status": status})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(DELAY)
                    if status != 200:
                        kind = "rate_limit_error" if status == 429 else "server_error"
                        # a short server-directed delay keeps the client's backoff fast in tests
                        return self.send(status, {"error": {"message": f"injected {status}", "type": kind}},
                                         {"retry-after-ms": "10"})
                    with server._lock:
                        payload = server.answer(body)
                    self.send(200, payload)
                finally:
                    with server._lock:
                        server.in_flight -= 1

        return Handler
