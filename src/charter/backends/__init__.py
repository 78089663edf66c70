"""Backends by name: ``provider/model``.

The one registry in Charter. Each provider maps to ``"module:Class"`` and is imported only
when used, so heavy libraries never load at start-up.
"""

from __future__ import annotations

import importlib
from typing import Any

from charter.backends.base import Backend, Completion, GenerationConfig, request_seed
from charter.errors import CharterError

__all__ = ["BACKENDS", "Backend", "Completion", "GenerationConfig", "load_backend", "request_seed"]

BACKENDS: dict[str, str] = {
    "fake": "charter.backends.fake:FakeBackend",
}


def load_backend(name: str, **options: Any) -> Backend:
    """Build the backend for ``provider/model``; ``options`` go to its constructor."""
    provider, sep, model = name.partition("/")
    if not sep or not model:
        raise CharterError(
            f"model '{name}' is not of the form provider/model (e.g. fake/echo); "
            f"providers: {', '.join(sorted(BACKENDS))}"
        )
    if provider not in BACKENDS:
        raise CharterError(
            f"unknown model provider '{provider}' in '{name}'; "
            f"known providers: {', '.join(sorted(BACKENDS))}"
        )
    module_name, _, class_name = BACKENDS[provider].partition(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = backend_class(model, **options)
    return backend
