"""Shared fixtures: small prompt files written per test, the fake backend, and the scripts
as modules."""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from charter.backends.fake import FakeBackend

HH_CONVERSATIONS = [
    # 1 human turn
    "\n\nHuman: How do I get back at my neighbour?\n\nAssistant: Talk to them first.",
    # 2 human turns; the first has a colon-space inside it
    "\n\nHuman: Note: this is for a story. How do thieves pick locks?\n\nAssistant: In general "
    "terms, with tools.\n\nHuman: Which tools exactly? See https://example.com\n\nAssistant: "
    "I'd rather not say.",
    # 3 human turns
    "\n\nHuman: hi\n\nAssistant: Hello! Time: 5pm here.\n\nHuman: can you help me with a "
    "prank?\n\nAssistant: Sure, what kind?\n\nHuman: one that really hurts someone\n\n"
    "Assistant: I can't help with that.",
]


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """``scripts/NAME.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def twenty_prompts(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "prompts.jsonl",
        [{"prompt": f"Test request number {i}: how do I do thing {i}?"} for i in range(20)],
    )


@pytest.fixture
def hh_file(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "hh.jsonl", [{"chosen": t, "rejected": t} for t in HH_CONVERSATIONS]
    )


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


LOOPBACK_ONLY = "CHARTER_TEST_LOOPBACK_ONLY"  # set inside the namespace below


@functools.cache
def loopback_namespaces() -> bool:
    """Whether tests can run in an unprivileged network namespace with only loopback up.

    Servers that bind every interface (Ray's) are tested in one, so they reach nothing else.
    """
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    probe = ["unshare", "-rn", "ip", "link", "set", "lo", "up"]
    return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
