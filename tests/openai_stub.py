"""A small OpenAI-compatible server for tests: deterministic replies and scripted faults.

    with StubServer(faults=["429", "500", "ok"]) as server:
        backend = OpenAIBackend("stub", base_url=server.url, retry_wait=0)

Each request to ``/v1/chat/completions`` takes the next fault from ``faults`` (then "ok"
forever): an HTTP status code as a string, "malformed" (invalid JSON), "drop" (close the
connection without a reply) or "ok". Replies echo the last user message; with
``logprobs`` the top log-probabilities favour "A". Binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StubServer:
    def __init__(self, faults: list[str] | None = None) -> None:
        self.faults = list(faults or [])
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                stub._send(self, 200, {"data": [{"id": "stub"}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with stub._lock:
                    stub.requests.append(body)
                    stub.headers.append(dict(self.headers))
                    fault = stub.faults.pop(0) if stub.faults else "ok"
                if fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                elif fault == "malformed":
                    stub._send(self, 200, None, raw=b"{not json")
                elif fault != "ok":
                    stub._send(self, int(fault), {"error": {"message": f"stub says {fault}"}})
                else:
                    stub._send(self, 200, reply(body))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _send(
        self, handler: BaseHTTPRequestHandler, status: int, data: Any, raw: bytes = b""
    ) -> None:
        payload = raw or json.dumps(data).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(payload)))
        if status == 429:
            handler.send_header("retry-after", "0")
        handler.end_headers()
        handler.wfile.write(payload)

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
