"""``openai/…``: any OpenAI-compatible chat completions endpoint.

vLLM, TGI, SGLang, Ollama, llama.cpp's server and hosted APIs all speak this protocol.

    charter revise --model openai/NAME --base-url http://127.0.0.1:8000/v1 …

The base URL comes from ``--base-url``, ``CHARTER_BASE_URL`` or ``OPENAI_BASE_URL``; several,
separated by commas, make a fleet (:mod:`charter.backends.fleet`: least outstanding requests
first, failed servers rested). The key comes from ``--api-key`` or ``OPENAI_API_KEY``. It only
ever goes into the Authorization header: it is never logged, put in an error message or
written to a manifest.

Requests run ``concurrency`` at a time. 429s, 5xx, timeouts, dropped connections and
malformed responses are retried with exponential backoff and jitter (honouring
``Retry-After``) up to ``max_retries`` times, each retry logged; then the run stops with
one clear line, and rerunning it resumes.

``choice_logprobs`` reads the server's top log-probabilities (see its docstring for what
that means and what happens when a choice is not among them).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import tenacity

from charter.backends.base import Completion, GenerationConfig, count_from_env, request_seed
from charter.backends.fleet import Fleet, Server, split_urls
from charter.errors import CharterError
from charter.records import Conversation, Usage

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class TransientError(Exception):
    """A failure worth retrying (rate limit, server error, malformed reply)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class OpenAIBackend:
    """A client for an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int | None = None,
        timeout: float = 300.0,
        max_retries: int | None = None,
        retry_wait: float = 0.5,
        retry_max_wait: float = 30.0,
        top_logprobs: int = 20,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.name = f"openai/{model}"
        self.model = model
        url = base_url or os.environ.get("CHARTER_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        urls = split_urls(url or "")
        if not urls:
            raise CharterError(
                f"{self.name} needs a server: pass --base-url URL (e.g. http://127.0.0.1:8000/v1) "
                "or set OPENAI_BASE_URL"
            )
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        concurrency = concurrency or 8 * len(urls)  # requests in flight, over all servers
        self._secrets = [key] if key else []
        self._fleet = Fleet([
            self._http_client(u, headers, timeout, concurrency) for u in urls
        ])  # fmt: skip
        self.concurrency = concurrency
        self.max_retries = max_retries if max_retries is not None else default_retries()
        self.top_logprobs = top_logprobs
        self.extra_body = dict(extra_body or {})
        self._wait = (retry_wait, retry_max_wait)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="charter-http")
        self._ready_lock = threading.Lock()
        self._ready = False
        self._warned_top_k = False
        self.totals = Usage()  # every call's tokens, scoring included (for manifests)
        self._totals_lock = threading.Lock()

    def _http_client(
        self, url: str, headers: dict[str, str], timeout: float, concurrency: int
    ) -> httpx.Client:
        # A user and password in the URL (http://user:PASSWORD@host) become basic auth, as
        # httpx would send them anyway, but the URL that requests (and httpx's log) carry
        # has none. Neither they nor the key are ever shown.
        parsed = httpx.URL(url)
        if parsed.password:
            self._secrets.append(parsed.password)
        return httpx.Client(
            base_url=str(parsed.copy_with(username=None, password=None)).rstrip("/"),
            headers=headers,
            auth=httpx.BasicAuth(parsed.username, parsed.password) if parsed.userinfo else None,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )  # fmt: skip

    @property
    def base_url(self) -> str:
        """The server's URL (the fleet's, comma-separated), without user or password."""
        return ",".join(server.url for server in self._fleet.servers)

    @property
    def servers(self) -> list[Server]:
        return self._fleet.servers

    def _redact(self, text: str) -> str:
        """``text`` with the API key and URL password masked (servers may echo them back)."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # --- the Backend interface -------------------------------------------------------------

    def generate(
        self, conversations: Sequence[Conversation], config: GenerationConfig
    ) -> list[Completion]:
        if not conversations:
            return []
        self.ensure_ready()
        return list(self._pool.map(lambda c: self._complete(c, config), conversations))

    def choice_logprobs(self, conversation: Conversation, choices: Sequence[str]) -> list[float]:
        """Log-probabilities of ``choices`` from the server's top log-probabilities.

        The choices' common prefix (e.g. " (" for " (A)" and " (B)") is appended to the
        assistant's reply (a prefill), one token is requested with ``top_logprobs``, and each
        choice gets the log-probability of the tokens that begin its remainder ("A", "B").
        The shared prefix and any tokens after the first are left out: they add the same
        amount to every choice of the usual single-letter kind, so normalised
        probabilities are unaffected. A choice whose first token is not among the top
        ``top_logprobs`` gets the lowest listed log-probability — an upper bound — and a
        warning is logged once. Servers need prefill support (llama.cpp has it; vLLM needs
        ``extra_body={"continue_final_message": True, "add_generation_prompt": False}``).
        """
        self.ensure_ready()
        prefix = os.path.commonprefix(list(choices))  # noqa: RUF071 - character prefix wanted
        rests = [c[len(prefix) :] for c in choices]
        if not choices or not all(rests):
            raise CharterError(f"choices must differ after their common prefix: {list(choices)!r}")
        messages = [m.model_dump() for m in conversation]
        if messages and messages[-1]["role"] == "assistant":
            messages[-1] = {"role": "assistant", "content": messages[-1]["content"] + prefix}
        elif prefix:
            messages.append({"role": "assistant", "content": prefix})
        payload = {"messages": messages, "max_tokens": 1, "temperature": 0.0, "logprobs": True,
                   "top_logprobs": self.top_logprobs}  # fmt: skip
        body = self._post(payload)
        try:
            top = body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            listed = [(str(t["token"]), float(t["logprob"])) for t in top]
        except (KeyError, IndexError, TypeError, ValueError):
            raise CharterError(
                f"{self.name}: the server returned no top log-probabilities; it must support "
                "'logprobs' and 'top_logprobs' on /chat/completions"
            ) from None
        return [self._score(rest, listed) for rest in rests]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._fleet.close()

    # --- requests --------------------------------------------------------------------------

    def ensure_ready(self) -> None:
        """Check once that the server answers, so a wrong URL fails in seconds."""
        with self._ready_lock:
            if not self._ready:
                self._start()
                self._ready = True

    def _start(self) -> None:
        unreachable = []
        for server in self._fleet.servers:
            try:
                server.client.get("/models", timeout=5.0)
            except httpx.HTTPError as err:
                unreachable.append(f"{server.url} ({self._redact(_reason(err))})")
                self._fleet.rest(server)
        if len(unreachable) == len(self._fleet.servers):
            raise CharterError(
                f"cannot reach {'; '.join(unreachable)}; is the server running? "
                "Check --base-url or OPENAI_BASE_URL",
                exit_code=1,
            )
        for problem in unreachable:  # a fleet goes on with the servers that answer
            log.warning("%s: cannot reach %s; sending its requests to the others", self.name,
                        problem)  # fmt: skip

    def _complete(self, conversation: Conversation, config: GenerationConfig) -> Completion:
        payload: dict[str, Any] = {
            "messages": [m.model_dump() for m in conversation],
            "max_tokens": config.max_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "seed": request_seed(config.seed, conversation),
        }
        if config.stop:
            payload["stop"] = list(config.stop)
        start = time.perf_counter()
        body = self._post(payload)
        try:
            choice = body["choices"][0]
            # A JSON reply may carry a lone surrogate escape ("\ud800"): not text that can
            # be hashed or written as UTF-8, so it becomes U+FFFD here, not a crash later.
            text = _as_text(choice["message"].get("content") or "")
            usage = usage_of(body)
            completion = Completion(
                text=_strip_prefill(text, conversation),
                finish_reason=choice.get("finish_reason") or "stop",
                prompt_tokens=usage.prompt_tokens,
                cached_tokens=usage.cached_tokens,
                completion_tokens=usage.completion_tokens,
                latency_s=time.perf_counter() - start,
            )
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise CharterError(f"{self.name}: unexpected response shape from the server") from None
        return completion

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = {"model": self.model, **payload, **self.extra_body}
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((TransientError, httpx.TransportError)),
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=self._wait_for,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            result: dict[str, Any] = retrying(self._post_once, body)
            self._count(result)
        except (TransientError, httpx.TransportError) as err:
            raise CharterError(
                f"{self.name} at {self.base_url}: request failed after {self.max_retries + 1} "
                f"attempts ({self._redact(_reason(err))}); rerun the same command to resume",
                exit_code=1,
            ) from None
        return result

    def _count(self, body: dict[str, Any]) -> None:
        try:
            spent = usage_of(body)
        except (TypeError, ValueError, AttributeError):  # counting never fails a request
            spent = Usage(calls=1)
        with self._totals_lock:
            self.totals += spent

    def _post_once(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._fleet.lease() as server:
            response = server.client.post("/chat/completions", json=body)
        where = f" from {server.url}" if len(self._fleet.servers) > 1 else ""
        if response.status_code in RETRY_STATUS:
            raise TransientError(f"HTTP {response.status_code}{where}", _retry_after(response))
        if response.status_code >= 400:
            raise CharterError(
                f"{self.name} at {server.url} refused the request: HTTP "
                f"{response.status_code} {self._redact(_server_message(response))}",
                exit_code=1,
            )
        try:
            data = response.json()
        except ValueError:
            raise TransientError(f"malformed JSON in the response{where}") from None
        if not isinstance(data, dict) or not data.get("choices"):
            raise TransientError(f"response without choices{where}")
        return data

    def _wait_for(self, state: tenacity.RetryCallState) -> float:
        initial, longest = self._wait
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, TransientError) and error.retry_after is not None:
            return min(error.retry_after, longest)
        if initial <= 0:
            return 0.0
        backoff = tenacity.wait_exponential(multiplier=initial, max=longest)
        return min(longest, float(backoff(state)) + float(tenacity.wait_random(0, initial)(state)))

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s: attempt %d failed (%s); retrying in %.1fs",
            self.name, state.attempt_number, self._redact(_reason(error)), state.upcoming_sleep,
        )  # fmt: skip

    def _score(self, rest: str, listed: list[tuple[str, float]]) -> float:
        matches = [lp for token, lp in listed if token and rest.startswith(token)]
        if matches:
            top = max(matches)
            return top + math.log(sum(math.exp(lp - top) for lp in matches))
        if not self._warned_top_k:
            self._warned_top_k = True
            log.warning(
                "%s: choice %r is not among the top %d tokens; using the lowest listed "
                "log-probability as an upper bound", self.name, rest, len(listed),
            )  # fmt: skip
        return min((lp for _, lp in listed), default=-100.0)


def usage_of(body: dict[str, Any]) -> Usage:
    """One call's tokens from an OpenAI-style response (llama.cpp's ``timings`` as fallback).

    Raises TypeError, ValueError or AttributeError when the fields have the wrong types.
    """
    usage = body.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens", (body.get("timings") or {}).get("cache_n", 0))
    return Usage(
        calls=1, prompt_tokens=int(usage.get("prompt_tokens", 0)), cached_tokens=int(cached or 0),
        completion_tokens=int(usage.get("completion_tokens", 0)),
    )  # fmt: skip


def _as_text(text: str) -> str:
    """``text`` with anything UTF-8 cannot hold (lone surrogates) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def _strip_prefill(text: str, conversation: Conversation) -> str:
    """Some servers (llama.cpp) echo an assistant prefill at the start of the reply."""
    if conversation and conversation[-1].role == "assistant":
        prefill = conversation[-1].content
        if prefill and text.startswith(prefill):
            return text[len(prefill) :]
    return text


def default_retries() -> int:
    """Retries of a failed request: ``charter --retries N`` (``CHARTER_RETRIES``), else 6.

    Six retries with backoff from 0.5 s wait about half a minute for a server to come back.
    """
    given = count_from_env("CHARTER_RETRIES", minimum=0, what="retries")
    return 6 if given is None else given


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def _server_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        message = error.get("message") if isinstance(error, dict) else str(error)
    except (ValueError, AttributeError):
        message = response.text
    return " ".join(str(message or "").split())[:300]


def _reason(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:300]
