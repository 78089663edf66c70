"""Run untrusted generated code against its tests: a separate, limited, offline process.

Model-written programs are untrusted. Each one runs in its own Python process (``python -I``,
no site or environment) started in a fresh scratch directory, with:

- **limits** on CPU time (``RLIMIT_CPU``), address space (``RLIMIT_AS``, so a huge allocation
  raises ``MemoryError``), file size (``RLIMIT_FSIZE``) and open files, and a wall-clock
  deadline after which its whole process group is killed;
- **no network**: a new, empty network namespace (``unshare --net``) where the system allows
  one, and in every case an audit hook (PEP 578, which code cannot remove) that refuses
  sockets;
- **no escape from the scratch directory**: the same hook refuses opening a file for writing,
  and removing, renaming or creating files, outside it, and refuses starting processes,
  ``fork``, ``ctypes`` and other native-code loaders.

A timeout, a limit, a blocked action or a failed assertion all count as a failure; the caller
gets an :class:`Outcome` saying which. The hook is a safety net for honest mistakes and
casual misbehaviour on a developer's machine, not a boundary against a determined attacker:
run evaluations of hostile code in a container or VM as well.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["passed", "failed", "timeout", "memory", "blocked", "error"]

# Runs first in the child: sets its limits (argv: CPU seconds, memory and file bytes, open
# files), installs the audit hook, then runs the program as __main__. Limits are set here
# rather than in a preexec_fn, which is unsafe in a threaded parent. BLOCKED marks a refusal.
_PRELUDE = r"""
import os, resource, sys

_cpu, _memory, _file, _files = map(int, sys.argv[1:5])
resource.setrlimit(resource.RLIMIT_CPU, (_cpu, _cpu + 1))  # SIGXCPU first, SIGKILL after
resource.setrlimit(resource.RLIMIT_AS, (_memory, _memory))
resource.setrlimit(resource.RLIMIT_FSIZE, (_file, _file))
resource.setrlimit(resource.RLIMIT_NOFILE, (_files, _files))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

SCRATCH = os.path.realpath(os.getcwd())
BLOCKED = "charter-sandbox-blocked"
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link",
                "os.chmod", "os.chown", "os.truncate", "os.utime", "shutil.rmtree",
                "shutil.copyfile", "shutil.move"}
_NEVER = {"socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
          "socket.sendto", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn",
          "os.spawn", "os.fork", "os.forkpty", "os.kill", "os.killpg", "pty.spawn",
          "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "mmap.__new__", "resource.setrlimit",
          "resource.prlimit"}
_NATIVE = {"ctypes", "_ctypes", "cffi", "_posixsubprocess", "multiprocessing"}


def _inside(path):
    if isinstance(path, int):
        return True  # an already-open descriptor
    try:
        real = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return real == SCRATCH or real.startswith(SCRATCH + os.sep)


def _refuse(event):
    raise PermissionError(f"{BLOCKED}: {event} is not allowed in the sandbox")


def _hook(event, args):
    if event in _NEVER:
        _refuse(event)
    if event == "import" and args[0].partition(".")[0] in _NATIVE:
        _refuse(f"import {args[0]}")
    if event == "open" and len(args) >= 3:
        path, mode, flags = args[0], args[1] or "", args[2] or 0
        writes = any(c in str(mode) for c in "wax+") or flags & _WRITE_FLAGS
        if writes and not _inside(path):
            _refuse(f"writing {path!r}")
    elif event in _PATH_EVENTS:
        paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        if not all(_inside(path) for path in paths):
            _refuse(f"{event} outside the scratch directory")


sys.addaudithook(_hook)
del _hook
import runpy
runpy.run_path("program.py", run_name="__main__")
"""
_BLOCKED = "charter-sandbox-blocked"


@dataclass(frozen=True)
class Limits:
    """What one program may use. The defaults fit HumanEval/MBPP-sized tests."""

    cpu_seconds: int = 10
    wall_seconds: float = 20.0
    memory_mb: int = 1024
    file_mb: int = 16
    open_files: int = 64


@dataclass(frozen=True)
class Outcome:
    """How a program fared: ``passed`` only when it ran to the end with exit status 0."""

    status: Status
    seconds: float
    detail: str = ""  # the last line of its stderr, or why it was stopped

    @property
    def passed(self) -> bool:
        return self.status == "passed"


DEFAULT_LIMITS = Limits()


def run_program(source: str, limits: Limits = DEFAULT_LIMITS, sentinel: str = "") -> Outcome:
    """Run ``source`` (a program with its tests, e.g. ``solution + tests + check(...)``).

    With ``sentinel``, exit status 0 passes only when the last line the program printed is
    the sentinel (printed after its tests): a program that exits early has not been tested.
    """
    scratch = Path(tempfile.mkdtemp(prefix="charter-sandbox-"))
    try:
        (scratch / "program.py").write_text(source, encoding="utf-8")
        (scratch / "_prelude.py").write_text(_PRELUDE, encoding="utf-8")
        outcome = _run(scratch, limits)
        if outcome.passed and sentinel:
            printed = (scratch / "stdout").read_bytes()[-4000:].decode("utf-8", "replace")
            last = printed.strip().splitlines()[-1] if printed.strip() else ""
            if last != sentinel:
                return Outcome("failed", outcome.seconds, "exited before its tests finished")
        return outcome
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(scratch: Path, limits: Limits) -> Outcome:
    sizes = (limits.cpu_seconds, limits.memory_mb * 2**20, limits.file_mb * 2**20,
             limits.open_files)  # fmt: skip
    command = [*_network_off(), sys.executable, "-I", "-B", "_prelude.py", *map(str, sizes)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch),
           "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}  # fmt: skip
    began = time.monotonic()
    with (scratch / "stdout").open("wb") as out, (scratch / "stderr").open("wb") as err:
        process = subprocess.Popen(
            command, cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True,
        )  # fmt: skip
        try:
            code = process.wait(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return Outcome("timeout", time.monotonic() - began, f"over {limits.wall_seconds}s")
        finally:
            _kill_group(process)  # anything it left behind in its group
    seconds = time.monotonic() - began
    stderr = (scratch / "stderr").read_bytes()[-4000:].decode("utf-8", "replace")
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if code == 0:
        return Outcome("passed", seconds)
    if code in (-signal.SIGXCPU, -signal.SIGKILL):
        return Outcome("timeout", seconds, f"over {limits.cpu_seconds}s of CPU")
    if _BLOCKED in stderr:
        return Outcome("blocked", seconds, last)
    if "MemoryError" in stderr:
        return Outcome("memory", seconds, f"over {limits.memory_mb} MB")
    if code == -signal.SIGXFSZ:
        return Outcome("failed", seconds, f"wrote more than {limits.file_mb} MB")
    return Outcome("failed" if code > 0 else "error", seconds, last or f"exit status {code}")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@functools.cache
def _network_off() -> tuple[str, ...]:
    """``unshare`` arguments for an empty network namespace, or none where it cannot be had."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return ()
    for command in ((unshare, "--net"), (unshare, "--net", "--map-root-user")):
        try:
            probe = subprocess.run([*command, "true"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return command
    return ()


def network_isolated() -> bool:
    """Whether programs run in their own empty network namespace here (besides the hook)."""
    return bool(_network_off())
