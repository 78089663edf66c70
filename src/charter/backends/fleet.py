"""Several OpenAI-compatible servers behind one client, so a fleet needs no load balancer.

    charter revise --model openai/NAME --base-url http://gpu1:8000/v1,http://gpu2:8000/v1

Each request goes to the server with the fewest requests in flight (ties take turns). A
server whose connection fails or times out rests — 1 s, doubling up to 30 s while it keeps
failing — and requests go to the others; the request itself is retried by the caller's
retry policy, so it lands on a live server. When every server rests, the one whose rest
ends first is tried. A server that answers (even with an HTTP error) is alive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

REST_FIRST_S = 1.0
REST_LONGEST_S = 30.0


def split_urls(base_url: str) -> list[str]:
    """``URL`` or ``URL1,URL2,…`` as a list (spaces around commas allowed, blanks dropped)."""
    return [url.strip() for url in base_url.split(",") if url.strip()]


@dataclass
class Server:
    """One server of the fleet, with its client and what it is doing."""

    client: httpx.Client
    outstanding: int = 0
    served: int = 0
    failures: int = 0  # connection failures in a row
    resting_until: float = 0.0

    @property
    def url(self) -> str:
        return str(self.client.base_url).rstrip("/")


class Fleet:
    """Picks a server per request: least outstanding first, failed servers rested."""

    def __init__(self, clients: list[httpx.Client]) -> None:
        self.servers = [Server(client) for client in clients]
        self._lock = threading.Lock()
        self._turn = 0

    @contextmanager
    def lease(self) -> Iterator[Server]:
        """A server for one request; a transport error inside the block rests it."""
        server = self._pick()
        try:
            yield server
        except httpx.TransportError:
            self.rest(server)
            raise
        else:
            with self._lock:
                server.failures = 0
                server.served += 1
        finally:
            with self._lock:
                server.outstanding -= 1

    def rest(self, server: Server) -> None:
        """Keep requests away from ``server`` for a while (longer each time it fails)."""
        with self._lock:
            server.failures += 1
            pause = min(REST_LONGEST_S, REST_FIRST_S * 2 ** (server.failures - 1))
            server.resting_until = time.monotonic() + pause

    def close(self) -> None:
        for server in self.servers:
            server.client.close()

    def _pick(self) -> Server:
        with self._lock:
            now = time.monotonic()
            awake = [s for s in self.servers if s.resting_until <= now]
            if not awake:
                awake = [min(self.servers, key=lambda s: s.resting_until)]
            n = len(self.servers)
            turn = self._turn
            self._turn += 1
            server = min(
                awake,
                key=lambda s: (s.outstanding, (self.servers.index(s) - turn) % n),
            )
            server.outstanding += 1
            return server
