"""A small OpenAI-compatible server for tests: deterministic replies and scripted faults.

    with StubServer(faults=["429", "500", "ok"]) as server:
        backend = OpenAIBackend("stub", base_url=server.url, retry_wait=0)

Each request to ``/v1/chat/completions`` takes the next fault from ``faults`` (then "ok"
forever): an HTTP status code as a string, "malformed" (invalid JSON), "drop" (close the
connection without a reply), "partial" (headers and half the body, then close), "stall"
(answer only after ``stall_s`` seconds, past the client's timeout), "echo-auth" (a 401 whose
message repeats the request's Authorization header, as a careless server might),
"surrogate" (a reply whose text holds a lone surrogate escape) or "ok".

``rate`` injects faults at random instead (seeded): each request gets one of
``RANDOM_FAULTS`` with that probability, but never more than ``max_faults_per_request``
times for the same request body, so a client with that many retries always finishes.
``down = True`` drops every request from then on (a dead server); ``down_after=N`` does so
after N requests. Replies echo the last user message; with ``logprobs`` the top
log-probabilities favour "A". Binds 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RANDOM_FAULTS = ("429", "500", "503", "malformed", "drop", "partial", "stall")


class StubServer:
    def __init__(
        self,
        faults: list[str] | None = None,
        *,
        rate: float = 0.0,
        seed: int = 0,
        max_faults_per_request: int = 3,
        stall_s: float = 1.0,
        down_after: int | None = None,
    ) -> None:
        self.faults = list(faults or [])
        self.rate = rate
        self.max_faults_per_request = max_faults_per_request
        self.stall_s = stall_s
        self.down_after = down_after
        self.down = False
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.served: Counter[str] = Counter()  # fault (or "ok") -> times served
        self.attempts: Counter[str] = Counter()  # request body -> times received
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                stub._send(self, 200, {"data": [{"id": "stub"}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                body = json.loads(raw or b"{}")
                with stub._lock:
                    stub.requests.append(body)
                    stub.headers.append(dict(self.headers))
                    fault = stub._next_fault(raw.decode())
                    stub.served[fault] += 1
                # The client may have given up first (a stall past its timeout).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    stub._answer(self, fault, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _next_fault(self, key: str) -> str:
        """The fault for this request (called under the lock)."""
        self.attempts[key] += 1
        if self.down_after is not None and len(self.requests) > self.down_after:
            self.down = True
        if self.down:
            return "drop"
        if self.faults:
            return self.faults.pop(0)
        if self._random.random() < self.rate and self.attempts[key] <= self.max_faults_per_request:
            return self._random.choice(RANDOM_FAULTS)
        return "ok"

    def _answer(self, handler: BaseHTTPRequestHandler, fault: str, body: dict[str, Any]) -> None:
        if fault == "drop":
            handler.close_connection = True
            handler.connection.close()
        elif fault == "malformed":
            self._send(handler, 200, None, raw=b"{not json")
        elif fault == "partial":
            payload = json.dumps(reply(body)).encode()
            self._send(handler, 200, None, raw=payload, cut=len(payload) // 2)
            handler.close_connection = True
            handler.connection.close()
        elif fault == "stall":
            time.sleep(self.stall_s)
            self._send(handler, 200, reply(body))
        elif fault == "surrogate":  # a reply with a lone surrogate escape, "\ud800"
            data = reply(body)
            data["choices"][0]["message"]["content"] += " \ud800!"
            self._send(handler, 200, data)
        elif fault == "echo-auth":
            auth = handler.headers.get("Authorization", "")
            self._send(handler, 401, {"error": {"message": f"invalid credentials: {auth}"}})
        elif fault != "ok":
            self._send(handler, int(fault), {"error": {"message": f"stub says {fault}"}})
        else:
            self._send(handler, 200, reply(body))

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        data: Any,
        raw: bytes = b"",
        cut: int | None = None,
    ) -> None:
        """Send a reply; ``cut`` sends only that many bytes of the body (a torn response)."""
        payload = raw or json.dumps(data).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(payload)))
        if status == 429:
            handler.send_header("retry-after", "0")
        handler.end_headers()
        handler.wfile.write(payload[:cut])
        handler.wfile.flush()

    def __enter__(self) -> StubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def reply(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages", [])
    last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    words = f"stub reply to: {last_user}".split()[: body.get("max_tokens", 16)]
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": " ".join(words)},
        "finish_reason": "stop",
    }
    if body.get("logprobs"):
        top = [
            {"token": "A", "logprob": -0.2},
            {"token": "B", "logprob": -1.7},
            {"token": "C", "logprob": -4.0},
        ]
        choice["logprobs"] = {"content": [{"token": "A", "logprob": -0.2, "top_logprobs": top}]}
    prompt_tokens = sum(len(str(m["content"]).split()) for m in messages)
    return {
        "id": "stub",
        "object": "chat.completion",
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                  "prompt_tokens_details": {"cached_tokens": prompt_tokens // 2}},
    }  # fmt: skip
