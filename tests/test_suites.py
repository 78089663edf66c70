"""The suite registry: every suite is one module, and a new one is one file away.

A toy suite (does the answer mention the word it was asked for?) is written into a module of
its own here, registered, and run end to end through ``charter evaluate`` on the fake model:
questions, answers, its own scoring and metric, results with an interval.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from charter import suites as registry
from charter.cli import cli
from charter.errors import CharterError
from charter.run_config import RunConfig

TOY = '''
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from charter.suites.base import Question, SuiteBase, ask


class EchoWord(SuiteBase):
    """Asks the model to say a word; an answer that contains it passes."""

    name = "echo-word"
    data = MappingProxyType({"words": "unused-default"})

    def questions(self, data: Mapping[str, Path], config) -> list[Question]:
        words = Path(data["words"]).read_text().split()
        return [Question(self.name, word, ask(f"Say {word}."), info={"word": word})
                for word in words[: config.limit]]

    def score(self, question, answer, model, judged):
        said = question.info["word"] in answer.answer
        return float(said), {"said": said}

    def metrics(self, items: Sequence) -> dict:
        return {"said_rate": ("rate", {i.key: i.score for i in items})} if items else {}


SUITE = EchoWord()
'''


def test_every_registered_suite_follows_the_protocol() -> None:
    for name in registry.SUITES:
        suite = registry.load(name)
        assert suite.name == name and suite.data, name
        assert set(suite.needs) <= {"refusal", "harm_judge", "pairwise_judge"}, name
        for method in ("questions", "prepare", "score", "metrics"):
            assert callable(getattr(suite, method)), (name, method)


def test_unknown_suite_names_fail_with_the_valid_ones() -> None:
    with pytest.raises(CharterError, match="no such suite; valid: harmlessness, over-refusal"):
        registry.load("harmfulness")
    with pytest.raises(ValueError, match="no suite harmfulness; valid: harmlessness"):
        RunConfig.model_validate({"evaluate": {"suites": ["harmfulness"]}})
    result = CliRunner().invoke(cli, ["evaluate", "--suite", "harmfulness", "--dry-run"])
    assert result.exit_code == 2 and "'harmfulness' is not one of" in result.output


def test_a_new_suite_in_one_file_runs_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "toy_suite.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.SUITES, "echo-word", "toy_suite:SUITE")
    words = tmp_path / "words.txt"
    words.write_text("apple pear plum")
    from charter import evaluate

    results = evaluate(["fake/echo"], out=tmp_path / "run", suites=["echo-word"],
                       data={"words": words})  # fmt: skip
    said = results["suites"]["echo-word"]["fake/echo"]["said_rate"]
    assert said["n"] == 3 and said["value"] == 1.0  # the echo model repeats the request
    items = [json.loads(x) for x in (tmp_path / "run" / "items.jsonl").read_text().splitlines()]
    assert [i["judgement"]["said"] for i in items] == [True, True, True]
    sys.modules.pop("toy_suite", None)
