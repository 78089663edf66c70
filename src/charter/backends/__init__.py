"""Backends by name: ``provider/model``.

The one registry in Charter. Each provider maps to ``"module:Class"`` and is imported only
when used, so heavy libraries never load at start-up.

- ``fake/NAME`` — deterministic stand-in that ships with Charter (tests, dry plumbing);
- ``local/smollm2-135m`` (the default) or ``local/PATH.gguf`` — llama.cpp in-process;
- ``openai/NAME`` — any OpenAI-compatible server (``--base-url``);
- ``hf/PATH`` — a local transformers checkpoint (or GGUF file, dequantised);
- ``vllm/MODEL`` — vLLM in this process, on a GPU (optional extra ``charter[vllm]``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from charter import DEFAULT_MODEL
from charter.backends.base import Backend, Completion, GenerationConfig, request_seed
from charter.errors import CharterError

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "Backend",
    "Completion",
    "GenerationConfig",
    "backend_loader",
    "load_backend",
    "request_seed",
]

BACKENDS: dict[str, str] = {
    "fake": "charter.backends.fake:FakeBackend",
    "local": "charter.backends.local:LocalBackend",
    "openai": "charter.backends.openai:OpenAIBackend",
    "hf": "charter.backends.hf:HFBackend",
    "vllm": "charter.backends.vllm_engine:VLLMBackend",
}


def load_backend(
    name: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int | None = None,
) -> Backend:
    """Build the backend for ``provider/model``.

    ``base_url`` and ``api_key`` apply to ``openai/…`` only; ``concurrency`` is the number of
    requests in flight (server slots for ``local/…``, batch size for ``hf/…``, vLLM's
    ``max_num_seqs`` for ``vllm/…``).
    """
    provider, sep, model = name.partition("/")
    if not sep or not model:
        raise CharterError(
            f"model '{name}' is not of the form provider/model (e.g. {DEFAULT_MODEL}); "
            f"providers: {', '.join(sorted(BACKENDS))}"
        )
    if provider not in BACKENDS:
        raise CharterError(
            f"unknown model provider '{provider}' in '{name}'; "
            f"known providers: {', '.join(sorted(BACKENDS))}"
        )
    if provider != "openai" and (base_url or api_key):
        raise CharterError(f"--base-url and --api-key apply to openai/… models, not '{name}'")
    options: dict[str, Any] = {}
    if provider == "openai":
        options = {"base_url": base_url, "api_key": api_key}
        if concurrency:
            options["concurrency"] = concurrency
    elif provider == "local" and concurrency:
        options["parallel"] = concurrency
    elif provider == "hf" and concurrency:
        options["batch_size"] = concurrency
    elif provider == "vllm" and concurrency:
        options["concurrency"] = concurrency
    elif provider == "fake":
        options["record_calls"] = False  # the call log is for tests that build one directly
    module_name, _, class_name = BACKENDS[provider].partition(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = backend_class(model, **options)
    return backend


def backend_loader(
    base_url: str | None, api_key: str | None, concurrency: int | None
) -> Callable[[str], Any]:
    """``name -> Backend`` for stages that call several models: the connection options
    reach the ``openai/…`` ones (``base_url`` would be an error for the others)."""

    def load(name: str) -> Any:
        remote = name.startswith("openai/")
        return load_backend(
            name, base_url=base_url if remote else None, api_key=api_key if remote else None,
            concurrency=concurrency,
        )  # fmt: skip

    return load
