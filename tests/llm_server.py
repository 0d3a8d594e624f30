"""A loopback server speaking the OpenAI chat-completions protocol, for testing API clients.

POST /v1/chat/completions answers deterministically. A judge request (max_tokens 1 with logprobs)
gets first-token log-probabilities chosen by keywords in the text after "ANSWER:" (a favouring
answer makes "support" likely, and so on), cut to the requested `top_logprobs`; any other request
gets a reply that quotes its last message. The server records every request, counts how many were
in flight at once (each takes ~50 ms so overlap shows), and fails the next ones on demand, with an
HTTP error status (`fail_next`) or with a malformed reply (`malform_next`).

It also speaks the Batch API: POST /v1/files (a multipart upload), POST /v1/batches, GET
/v1/batches/{id}, POST /v1/batches/{id}/cancel and GET /v1/files/{id}/content. A batch's lines get
the answers a chat-completions request with the same body gets; how the batch goes is set per
batch by `plan_batches` (`BatchPlan`: finish after a few polls, expire part-way, fail some lines
or the whole batch), `malform_next` malforms the next answered lines as it does online replies,
and `hold_batches` keeps every batch in progress until released. `calls` counts the Batch API
calls by name (files.create, batches.create, ...), as `requests` lists the chat-completions
requests.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import math
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
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


@dataclass
class BatchPlan:
    """How one batch goes: `polls` status polls after its creation, it finishes; then, in input
    order, its first `failed_lines` lines fail (with HTTP `line_status` in the error file, or with
    an error object and no response where `line_status` is None), or it expires with only its first
    `expire_after` lines done (the rest in the error file as batch_expired), or it fails as a whole
    (`fail`: status failed with a validation error, no output)."""
    polls: int = 2
    failed_lines: int = 0
    line_status: int | None = 500
    expire_after: int | None = None
    fail: bool = False


EXPIRED = {"code": "batch_expired",
           "message": "This request could not be executed before the completion window expired."}


class ChatServer:
    def __init__(self):
        self.requests: list[dict] = []    # {"body", "authorization", "status", "malformed"} per request
        self.calls: Counter = Counter()   # Batch API calls by name
        self.batches: dict[str, dict] = {}
        self.files: dict[str, bytes] = {}
        self._plans: deque[BatchPlan] = deque()
        self._hold = False
        self._batch_ids = itertools.count(1)  # ids are not reused when a test clears `batches`
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

    def plan_batches(self, *plans: BatchPlan) -> None:
        """The next batches created go as these plans say (later ones: `BatchPlan()`)."""
        with self._lock:
            self._plans.extend(plans)

    def hold_batches(self, hold: bool) -> None:
        """While held, polls do not move a batch on: it stays in progress."""
        with self._lock:
            self._hold = hold

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = 0
            self._failures.clear()
            self._malformed.clear()
            self.calls.clear()
            self.batches.clear()
            self.files.clear()
            self._plans.clear()
            self._hold = False
            self._batch_ids = itertools.count(1)

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

    # -- the Batch API --------------------------------------------------------------------------

    def upload(self, content_type: str, data: bytes) -> tuple[int, dict]:
        form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + data)
        fields = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                  for part in form.iter_parts()}
        if fields.get("purpose") != b"batch" or "file" not in fields:
            return 400, {"error": {"message": "expected purpose batch and a file", "type": "invalid_request_error"}}
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = fields["file"]
        return 200, {"id": file_id, "object": "file", "bytes": len(fields["file"]), "created_at": int(time.time()),
                     "filename": "requests.jsonl", "purpose": "batch", "status": "processed"}

    def create_batch(self, body: dict) -> tuple[int, dict]:
        if body.get("input_file_id") not in self.files or body.get("endpoint") != "/v1/chat/completions" \
                or body.get("completion_window") != "24h":
            return 400, {"error": {"message": "bad batch", "type": "invalid_request_error"}}
        lines = [json.loads(line) for line in self.files[body["input_file_id"]].decode().splitlines()]
        batch_id = f"batch_{next(self._batch_ids)}"
        batch = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                 "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
                 "request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "metadata": None}
        plan = self._plans.popleft() if self._plans else BatchPlan()
        self.batches[batch_id] = {"batch": batch, "lines": lines, "plan": plan, "polls": 0, "cancel": False}
        return 200, batch

    def retrieve_batch(self, batch_id: str) -> tuple[int, dict]:
        if batch_id not in self.batches:
            return 404, {"error": {"message": f"no batch {batch_id}", "type": "invalid_request_error"}}
        state = self.batches[batch_id]
        batch, plan = state["batch"], state["plan"]
        if batch["status"] in ("validating", "in_progress", "cancelling") and not self._hold:
            state["polls"] += 1
            if state["cancel"]:
                batch["status"] = "cancelled"
            elif state["polls"] >= plan.polls:
                self._finish(state)
            else:
                batch["status"] = "in_progress"
                batch["request_counts"]["completed"] = len(state["lines"]) * state["polls"] // plan.polls
        return 200, batch

    def cancel_batch(self, batch_id: str) -> tuple[int, dict]:
        if batch_id not in self.batches:
            return 404, {"error": {"message": f"no batch {batch_id}", "type": "invalid_request_error"}}
        state = self.batches[batch_id]
        state["cancel"] = True
        state["batch"]["status"] = "cancelling"
        return 200, state["batch"]

    def _finish(self, state: dict) -> None:
        batch, plan, lines = state["batch"], state["plan"], state["lines"]
        if plan.fail:
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "line": 1, "param": "body",
                                                           "message": "injected validation failure"}]}
            return
        done = len(lines) if plan.expire_after is None else plan.expire_after
        output, errors = [], []
        for i, line in enumerate(lines):
            result = {"id": f"batch_req_{i}", "custom_id": line["custom_id"], "response": None, "error": None}
            if i >= done:
                errors.append({**result, "error": EXPIRED})
            elif i < plan.failed_lines and plan.line_status is None:
                errors.append({**result, "error": {"code": "server_error", "message": "injected line failure"}})
            elif i < plan.failed_lines:
                body = {"error": {"message": f"injected {plan.line_status}", "type": "server_error"}}
                errors.append({**result, "response": {"status_code": plan.line_status, "body": body}})
            else:  # a malformed reply (`malform_next`) goes to the next line answered, online or not
                answer = self.answer(line["body"], self._malformed.popleft() if self._malformed else None)
                output.append({**result, "response": {"status_code": 200, "request_id": f"req_{i}", "body": answer}})
        batch["status"] = "completed" if plan.expire_after is None else "expired"
        batch["output_file_id"] = self._results(output)
        batch["error_file_id"] = self._results(errors)
        batch["request_counts"] = {"total": len(lines), "completed": len(output), "failed": len(errors)}

    def _results(self, lines: list[dict]) -> str | None:
        if not lines:
            return None
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = "".join(json.dumps(line) + "\n" for line in lines).encode()
        return file_id

    def batch_route(self, method: str, path: str, content_type: str, data: bytes) -> tuple[str, int, object]:
        """(call name, status, payload: a dict for JSON, bytes for a file) of a Batch API request."""
        if (method, path) == ("POST", "/v1/files"):
            return "files.create", *self.upload(content_type, data)
        if (method, path) == ("POST", "/v1/batches"):
            return "batches.create", *self.create_batch(json.loads(data))
        if method == "GET" and (m := re.fullmatch(r"/v1/batches/([\w-]+)", path)):
            return "batches.retrieve", *self.retrieve_batch(m[1])
        if method == "POST" and (m := re.fullmatch(r"/v1/batches/([\w-]+)/cancel", path)):
            return "batches.cancel", *self.cancel_batch(m[1])
        if method == "GET" and (m := re.fullmatch(r"/v1/files/([\w-]+)/content", path)) and m[1] in self.files:
            return "files.content", 200, self.files[m[1]]
        return "unknown", 404, {"error": {"message": f"no route {method} {path}", "type": "invalid_request_error"}}

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

            def do_GET(self):
                self.batch_api("GET", b"")

            def batch_api(self, method: str, data: bytes):
                with server._lock:
                    name, status, payload = server.batch_route(method, self.path, self.headers.get("Content-Type", ""),
                                                               data)
                    server.calls[name] += 1
                if isinstance(payload, bytes):
                    return self.send_bytes(status, payload, "application/octet-stream")
                self.send(status, payload)

            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/chat/completions":
                    return self.batch_api("POST", data)
                body = json.loads(data or b"{}")
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
