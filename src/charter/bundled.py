"""Files that ship inside the package (constitutions, demo prompt sets), found by name."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from charter.errors import CharterError


def bundled_names(folder: str, suffix: str) -> list[str]:
    """Names of the package's ``folder/*{suffix}`` files, without the suffix."""
    files = resources.files("charter") / folder
    return sorted(p.name.removesuffix(suffix) for p in files.iterdir() if p.name.endswith(suffix))


def resolve_bundled(source: str | Path, folder: str, suffix: str, what: tuple[str, str]) -> Path:
    """``source`` if it is a file, else the bundled file of that name, else a clear error.

    ``what`` names the file and the bundled kind for that error, e.g. ``("prompt",
    "prompt set")``.
    """
    path = Path(source)
    if path.is_file():
        return path
    names = bundled_names(folder, suffix)
    if str(source) in names:
        return Path(str(resources.files("charter") / folder / f"{source}{suffix}"))
    raise CharterError(
        f"no {what[0]} file or bundled {what[1]} named '{source}'; bundled: {', '.join(names)}"
    )
