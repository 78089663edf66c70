"""Runs tests/test_ray.py in a network namespace with only loopback (where the system allows).

Ray's services listen on every interface and cannot be told otherwise; inside an
unprivileged namespace (``unshare -rn``) the only interface is loopback, so the cluster the
tests start is reachable from this machine alone. Where namespaces are not available, the
Ray tests run directly instead and this one is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LOOPBACK_ONLY, loopback_namespaces

ROOT = Path(__file__).resolve().parent.parent


def test_the_ray_tests_pass_with_loopback_only() -> None:
    pytest.importorskip("ray")
    if not loopback_namespaces():
        pytest.skip("no unprivileged network namespaces: tests/test_ray.py runs directly")
    script = 'ip link set lo up && exec "$0" -m pytest -q -p no:cacheprovider tests/test_ray.py'
    result = subprocess.run(
        ["unshare", "-rn", "sh", "-c", script, sys.executable], cwd=ROOT,
        env={**os.environ, LOOPBACK_ONLY: "1"}, capture_output=True, text=True, timeout=900,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(summary)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary, summary
