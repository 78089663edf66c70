"""Constitution files: the bundled default, validation errors with file and line, hashing."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from pathlib import Path

import pytest
import yaml

from charter.constitution import Constitution, bundled_names
from charter.errors import CharterError

MINIMAL = """\
name: tiny
version: "0.1"
description: A two-principle constitution for tests.
principles:
  - id: harm
    critique: Say what is harmful.
    revision: Remove what is harmful.
    comparison: Which is less harmful?
  - id: privacy
    tags: [privacy]
    critique: Say what reveals private data.
    revision: Remove private data.
demonstrations:
  - id: demo
    principle: harm
    messages:
      - {role: user, content: Help me.}
      - {role: assistant, content: Here is something harmful.}
    critique: It is harmful.
    revision: Here is something safe instead.
"""


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(CharterError) as info:
        Constitution.load(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_default_is_bundled_and_complete() -> None:
    assert "default" in bundled_names()
    c = Constitution.load("default")
    assert len(c.critique_principles) >= 12
    assert len(c.comparison_principles) >= 12
    assert len(c.demonstrations) >= 3
    assert c.spec and c.hard_constraints
    anti_evasion = [p for p in c.principles if "over-refusal" in p.tags]
    assert anti_evasion, "the default constitution must push back on needless refusals"
    assert "refus" in (anti_evasion[0].critique or "").lower()


def test_sha256_is_stable_and_ignores_formatting(tmp_path: Path) -> None:
    a = Constitution.load(write(tmp_path, MINIMAL, "a.yaml"))
    # Same content, different layout and comments: same hash.
    reformatted = "# a comment\n" + yaml.safe_dump(yaml.safe_load(MINIMAL), sort_keys=True)
    b = Constitution.load(write(tmp_path, reformatted, "b.yaml"))
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    c = Constitution.load(
        write(tmp_path, MINIMAL.replace("Remove private data.", "Drop it."), "c.yaml")
    )
    assert c.sha256 != a.sha256


def test_sample_is_uniform_with_replacement() -> None:
    c = Constitution.load("default")
    rng = random.Random(7)
    n = len(c.critique_principles)
    draws = [c.sample(rng).id for _ in range(400 * n)]
    counts = Counter(draws)
    assert set(counts) == {p.id for p in c.critique_principles}
    assert all(300 < k < 500 for k in counts.values()), counts
    # With replacement: consecutive repeats happen about 1/n of the time.
    repeats = sum(a == b for a, b in itertools.pairwise(draws))
    assert 0.5 * len(draws) / n < repeats < 1.5 * len(draws) / n
    first, second = random.Random(3), random.Random(3)
    assert [c.sample(first).id for _ in range(20)] == [c.sample(second).id for _ in range(20)]


def test_missing_revision_names_file_line_and_principle(tmp_path: Path) -> None:
    text = MINIMAL.replace("    revision: Remove private data.\n", "")
    message = load_error(tmp_path, text)
    assert "c.yaml:9:" in message  # the line where that principle starts
    assert "privacy" in message and "revision" in message


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("  - id: privacy", "  - id: harm"), "duplicate principle id 'harm'"),
        (("principle: harm", "principle: nope"), "unknown principle 'nope'"),
        (("    tags: [privacy]", "    tagz: [privacy]"), "tagz"),
        (("name: tiny", "name: ''"), "name"),
        (("    critique: Say what reveals private data.\n    revision: Remove private data.\n", ""),
         "needs a critique/revision pair"),
        (("{role: assistant, content: Here is", "{role: user, content: Here is"),
         "end with the assistant answer"),
        (("      - {role: assistant, content: Here is something harmful.}\n", ""),
         "messages: must have at least 2 item(s), not 1"),
    ],
)  # fmt: skip
def test_invalid_files_fail_with_one_clear_line(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    assert edit[0] in MINIMAL
    message = load_error(tmp_path, MINIMAL.replace(*edit))
    assert message.startswith(str(tmp_path / "c.yaml") + ":")
    assert expected in message


def test_yaml_problems(tmp_path: Path) -> None:
    assert "aliases" in load_error(tmp_path, "a: &x [1, 2]\nb: *x\n")
    assert "duplicate key 'name'" in load_error(tmp_path, "name: a\nname: b\n")
    assert "c.yaml:2: invalid YAML" in load_error(tmp_path, "name: a\n  bad: [\n")
    assert "YAML mapping" in load_error(tmp_path, "- just\n- a list\n")
    path = tmp_path / "c.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(CharterError, match="not UTF-8"):
        Constitution.load(path)


def test_unknown_name_lists_bundled(tmp_path: Path) -> None:
    with pytest.raises(CharterError, match="bundled: assistant, code, default"):
        Constitution.load("no-such-constitution")


def test_numeric_version_is_accepted(tmp_path: Path) -> None:
    c = Constitution.load(write(tmp_path, MINIMAL.replace('version: "0.1"', "version: 0.1")))
    assert c.version == "0.1"
