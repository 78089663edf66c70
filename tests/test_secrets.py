"""API keys and Authorization headers never reach a file, a log line or an error message.

Real ``charter`` processes at debug logging (``-vv``), against the stub OpenAI-compatible
server with faults (so retries are logged), with the key given as ``--api-key``, as
``OPENAI_API_KEY`` and as a password inside ``--base-url``; then failing runs, one against a
server that echoes the Authorization header back in its error. Every file under the test's
folder and everything the processes printed is searched for the secrets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import write_jsonl
from openai_stub import StubServer

FLAG_KEY = "sk-flag-secret-7f3a9c"
ENV_KEY = "sk-env-secret-51d2e8"
URL_PASSWORD = "url-password-c0ffee"
SECRETS = (FLAG_KEY, ENV_KEY, URL_PASSWORD)


def charter(*args: str | Path, env_key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"OPENAI_API_KEY", "OPENAI_BASE_URL"}}
    if env_key:
        env["OPENAI_API_KEY"] = env_key
    return subprocess.run(
        [sys.executable, "-m", "charter", "-vv", *map(str, args)],
        capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def with_password(url: str) -> str:
    return url.replace("http://", f"http://charter:{URL_PASSWORD}@")


def test_no_secret_in_any_file_log_or_error(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"prompt": f"How do I pick lock {i}?"} for i in range(3)]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", rows)
    printed: list[str] = []
    with StubServer(faults=["500", "malformed", "drop", "429"]) as server:
        runs = [
            charter("revise", "--model", "openai/stub", "--base-url", server.url,
                    "--api-key", FLAG_KEY, "--prompts", prompts, "--rounds", "1",
                    "--out", tmp_path / "revise"),
            charter("label", "--policy", "openai/stub", "--labeller", "openai/stub",
                    "--base-url", server.url, "--prompts", prompts, "--max-tokens", "8",
                    "--out", tmp_path / "label", env_key=ENV_KEY),
            charter("revise", "--model", "openai/stub", "--base-url", with_password(server.url),
                    "--prompts", prompts, "--rounds", "1", "--out", tmp_path / "password"),
        ]  # fmt: skip
        assert [r.returncode for r in runs] == [0, 0, 0], [r.stderr[-500:] for r in runs]
        sent = {h.get("Authorization") for h in server.headers}
        assert f"Bearer {FLAG_KEY}" in sent and f"Bearer {ENV_KEY}" in sent  # keys were used
        assert any(h and h.startswith("Basic ") for h in sent)  # the URL's password as well
        assert any("retrying" in r.stderr for r in runs)  # logs with faults were searched too
        printed += [r.stdout + r.stderr for r in runs]

        server.faults = ["echo-auth"]  # a server that repeats the header in its error
        echoed = charter("revise", "--model", "openai/stub", "--base-url", server.url,
                         "--api-key", FLAG_KEY, "--prompts", prompts,
                         "--out", tmp_path / "echo")  # fmt: skip
        assert echoed.returncode == 1
        assert "HTTP 401 invalid credentials: Bearer ***" in echoed.stderr
        printed.append(echoed.stdout + echoed.stderr)

        server.down = True  # a dead server: retries (2, not 6 with their half minute of backoff)
        dead = charter("--retries", "2", "revise", "--model", "openai/stub",
                       "--base-url", with_password(server.url), "--prompts", prompts,
                       "--out", tmp_path / "dead", env_key=ENV_KEY)  # fmt: skip
        assert dead.returncode == 1 and "failed after 3 attempts" in dead.stderr
        printed.append(dead.stdout + dead.stderr)

    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != prompts]
    assert len(written) >= 10  # traces, SFT rows, samples, labels, prefs, manifests …
    for path in written:
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret} written to {path}"
        assert b"Bearer" not in data and b"Authorization" not in data, path
    for text in printed:
        for secret in SECRETS:
            assert secret not in text
        assert "Authorization" not in text
