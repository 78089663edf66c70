"""The HTTP side of ``charter serve``: OpenAI's chat completions API on FastAPI.

Per route prefix P (``/v1`` by default): ``POST P/chat/completions`` (``stream`` included) and
``GET P/models``; beside them ``GET /metrics`` (Prometheus text format) and ``GET /health``.
Errors come back as OpenAI error objects (``{"error": {"message", "type", "param",
"code"}}``): 400 for a bad body, 401 for a missing or wrong key, 502 when the backend fails,
504 when it takes longer than ``timeout_s`` (the request returns; no client hangs on it).

Streaming: Charter's backends return whole answers, so the answer is generated and checked
whole, then sent as server-sent events one sentence per chunk: no unchecked text reaches the
client. Every request's decisions go to the decision log (one JSON line each: time, a hash
of the request, route, policy, latency and each check with its score, and the principle a
refusal or revision was written under; never the request's text or a key).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from charter.backends import GenerationConfig
from charter.records import Message, messages_id
from charter.serve.layer import Layer, Outcome, Policy, sentences


class ChatMessage(BaseModel):
    """A message as OpenAI clients send it: content a string or a list of text parts;
    ``developer`` (newer clients' name for the system turn) read as ``system``."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]

    def message(self) -> Message:
        text = self.content
        if isinstance(text, list):
            text = "".join(str(part.get("text", "")) for part in text if part.get("type") == "text")
        return Message(role="system" if self.role == "developer" else self.role, content=text)


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat completion request that Charter reads; others are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int = 0
    stop: str | list[str] | None = None
    stream: bool = False


class ServeError(Exception):
    def __init__(self, status: int, message: str, kind: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class DecisionRow(BaseModel):
    """One request in the decision log: never its text, only a hash of it."""

    time: str
    request: str
    route: str
    policy: str
    latency_ms: float
    decisions: list[dict[str, Any]]


class DecisionLog:
    """The decision log: the project's JSONL appender (a torn last line left by a killed
    server is cut on start, each line flushed), behind a lock for concurrent requests."""

    def __init__(self, path: Path | None) -> None:
        from charter.runs import JsonlAppender

        self.lock, self.sink = threading.Lock(), None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.sink = JsonlAppender(path)

    def write(self, row: DecisionRow) -> None:
        if self.sink is not None:
            with self.lock:
                self.sink.write(row)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


class Metrics:
    """Prometheus counters and latency histogram in a registry of the app's own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("charter_requests", "Chat requests answered, by outcome",
                                ["route", "policy", "action"], registry=self.registry)  # fmt: skip
        self.errors = Counter("charter_errors", "Requests that ended in an error",
                              ["route", "code"], registry=self.registry)  # fmt: skip
        self.latency = Histogram("charter_request_seconds", "Time to answer a chat request",
                                 ["route", "policy"], registry=self.registry)  # fmt: skip
        self.in_flight = Gauge("charter_in_flight", "Chat requests being answered",
                               registry=self.registry)  # fmt: skip

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


def create_app(
    layer: Layer, *, model_name: str, keys: Iterable[str] = (), log: Path | None = None
) -> FastAPI:
    """The server around ``layer``; ``keys``: the API keys a client must send (none: open)."""
    metrics, decisions = Metrics(), DecisionLog(log)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        decisions.close()

    app = FastAPI(title="charter serve", docs_url=None, redoc_url=None, lifespan=lifespan)
    allowed = [k.encode("utf-8") for k in keys]
    app.state.metrics = metrics

    @app.exception_handler(ServeError)
    async def serve_error(_: Request, err: ServeError) -> JSONResponse:
        return JSONResponse(error_body(err.message, err.kind, err.code), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def bad_body(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
        message = f"{where}: {first.get('msg', 'invalid')}"
        return JSONResponse(error_body(message, "invalid_request_error"), status_code=400)

    def authorise(request: Request) -> None:
        if not allowed:
            return
        header = request.headers.get("authorization", "")
        given = header.removeprefix("Bearer ").strip().encode("utf-8")
        if not any(hmac.compare_digest(given, key) for key in allowed):
            raise ServeError(401, "missing or wrong API key (Authorization: Bearer KEY)",
                             "authentication_error", "invalid_api_key")  # fmt: skip

    def add_routes(prefix: str, policy: Policy) -> None:
        @app.get(f"{prefix}/models")
        async def models(request: Request) -> dict[str, Any]:
            authorise(request)
            return {
                "object": "list",
                "data": [
                    {"id": model_name, "object": "model", "created": 0, "owned_by": "charter"}
                ],
            }

        @app.post(f"{prefix}/chat/completions", response_model=None)
        async def chat(body: ChatRequest, request: Request) -> Any:
            authorise(request)
            start = time.perf_counter()
            messages = [m.message() for m in body.messages]
            if messages[-1].role != "user":
                raise ServeError(400, "messages: the last message must be the user's",
                                 "invalid_request_error")  # fmt: skip
            stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
            generation = GenerationConfig(
                temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=stop,
                max_tokens=body.max_completion_tokens or body.max_tokens
                or layer.config.max_tokens,
            )  # fmt: skip
            metrics.in_flight.inc()
            try:
                outcome = await asyncio.wait_for(
                    asyncio.to_thread(layer.respond, policy, messages, generation),
                    timeout=layer.config.timeout_s,
                )
            except TimeoutError:
                metrics.errors.labels(prefix, "timeout").inc()
                raise ServeError(504, f"the model took longer than {layer.config.timeout_s:g} s",
                                 "server_error", "timeout") from None  # fmt: skip
            except Exception as err:  # the backend's failure, whatever it is: one error object
                metrics.errors.labels(prefix, "backend_error").inc()
                raise ServeError(502, f"the model failed: {type(err).__name__}: {err}",
                                 "server_error", "backend_error") from None  # fmt: skip
            finally:
                metrics.in_flight.dec()
            elapsed = round(1000 * (time.perf_counter() - start), 1)
            metrics.latency.labels(prefix, policy).observe(elapsed / 1000)
            for d in outcome.decisions:
                metrics.requests.labels(prefix, policy, d.action).inc()
            decisions.write(DecisionRow(
                time=datetime.now(UTC).isoformat(timespec="milliseconds"),
                request=messages_id(messages), route=prefix, policy=policy, latency_ms=elapsed,
                decisions=[asdict(d) for d in outcome.decisions],
            ))  # fmt: skip
            reply_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
            if body.stream:
                return StreamingResponse(_events(reply_id, model_name, outcome),
                                         media_type="text/event-stream")  # fmt: skip
            return _completion(reply_id, model_name, outcome)

    for prefix, policy in layer.config.routes.items():
        add_routes(prefix.rstrip("/"), policy)

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        from prometheus_client import CONTENT_TYPE_LATEST

        return PlainTextResponse(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": model_name}

    return app


def _completion(reply_id: str, model: str, outcome: Outcome) -> dict[str, Any]:
    return {
        "id": reply_id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": outcome.finish_reason,
                     "message": {"role": "assistant", "content": outcome.text}}],
        "usage": {"prompt_tokens": outcome.prompt_tokens,
                  "completion_tokens": outcome.completion_tokens,
                  "total_tokens": outcome.prompt_tokens + outcome.completion_tokens},
    }  # fmt: skip


async def _events(reply_id: str, model: str, outcome: Outcome) -> AsyncIterator[str]:
    """The checked answer as OpenAI's stream: a role chunk, one chunk per sentence, the end."""

    def chunk(delta: dict[str, str], finish: str | None = None) -> str:
        body = {"id": reply_id, "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    for piece in sentences(outcome.text):
        yield chunk({"content": piece})
    yield chunk({}, outcome.finish_reason)
    yield "data: [DONE]\n\n"


@contextmanager
def in_background(app: FastAPI, timeout_s: float = 20.0) -> Iterator[str]:
    """``app`` on uvicorn in a thread, on a free loopback port; yields its base URL and
    stops it on exit (tests and benchmarks; ``charter serve`` runs uvicorn in the foreground)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, name="charter-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("charter serve did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
