"""Constitutions: the written principles Charter trains a model against.

A constitution is a YAML file with a name, version and description, an optional long-form
``spec`` (priorities, hard constraints in prose), a list of principles and few-shot
demonstrations. A principle carries a critique request and its matching revision request
(the supervised stage), a comparison question (the feedback stage), or both.

    c = Constitution.load("default")        # bundled name, or a path
    principle = c.sample(random.Random(0))  # uniformly, with replacement
"""

from __future__ import annotations

import hashlib
import random
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from charter import bundled
from charter.errors import CharterError, plain_words
from charter.records import Message, canonical_json
from charter.yamlfile import Location, line_of, load_yaml

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)]
# YAML reads `version: 1.0` as a float; accept it as the string the author meant.
Version = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int | float) else v)]


class Source(BaseModel):
    """Where a compiled principle comes from: a clause of a long-form constitution."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Text
    section: Text
    line: int = Field(ge=1)
    end: int = Field(ge=1)


class Tests(BaseModel):
    """A principle's test prompts: requests it should make the model decline (``refuse``),
    and requests that only sound like them and must be answered (``answer``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    refuse: tuple[Text, ...] = ()
    answer: tuple[Text, ...] = ()


class Principle(BaseModel):
    """One principle. ``critique`` and ``revision`` come as a pair; ``comparison`` is apart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Id
    tags: tuple[Text, ...] = ()
    priority: int | None = Field(default=None, ge=1, description="1 is the most important")
    critique: Text | None = None
    revision: Text | None = None
    comparison: Text | None = None
    # Yes/no propositions an answer that keeps the principle satisfies ("The code checks its
    # inputs before using them."); a reward or a judge can count the ones that hold.
    checks: tuple[Text, ...] = ()
    source: Source | None = None  # compiled principles: the clause it came from
    tests: Tests | None = None  # compiled principles: prompts to test it with

    @model_validator(mode="after")
    def _pairs(self) -> Principle:
        if self.critique and not self.revision:
            raise ValueError(
                "has a 'critique' but no 'revision'; add the matching revision request"
            )
        if self.revision and not self.critique:
            raise ValueError(
                "has a 'revision' but no 'critique'; add the matching critique request"
            )
        if not self.critique and not self.comparison:
            raise ValueError("needs a critique/revision pair, a 'comparison', or both")
        return self


class Demonstration(BaseModel):
    """A worked example: a conversation, its critique and its revision under one principle."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Id
    principle: Id
    messages: tuple[Message, ...] = Field(min_length=2)
    critique: Text
    revision: Text

    @model_validator(mode="after")
    def _ends_with_answer(self) -> Demonstration:
        turns = [m for m in self.messages if m.role != "system"]
        if not turns or turns[0].role != "user" or turns[-1].role != "assistant":
            raise ValueError(
                "'messages' must start with a user turn and end with the assistant answer"
            )
        return self


class Constitution(BaseModel):
    """A validated constitution. Load with :meth:`load`; hash with :attr:`sha256`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Text
    version: Version
    description: Text
    spec: Text | None = None
    hard_constraints: tuple[Text, ...] = ()
    principles: tuple[Principle, ...] = Field(min_length=1)
    demonstrations: tuple[Demonstration, ...] = ()

    @classmethod
    def load(cls, source: str | Path) -> Constitution:
        """Load a constitution from a YAML path or a bundled name (e.g. ``"default"``)."""
        path = resolve(source)
        data, lines = load_yaml(path)
        return cls.from_data(data, path=path, lines=lines)

    @classmethod
    def from_data(
        cls, data: Any, *, path: Path, lines: dict[Location, int] | None = None
    ) -> Constitution:
        lines = lines or {}
        if not isinstance(data, dict):
            raise CharterError(f"{path}:1: a constitution is a YAML mapping (name:, principles: …)")
        try:
            constitution = cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            loc = tuple(first["loc"])
            more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
            raise CharterError(
                f"{path}:{line_of(lines, loc)}: {_describe(loc, data)}: {_message(first)}{more}"
            ) from None
        for loc, problem in constitution._reference_problems():
            raise CharterError(f"{path}:{line_of(lines, loc)}: {_describe(loc, data)}: {problem}")
        return constitution

    def _reference_problems(self) -> list[tuple[Location, str]]:
        problems: list[tuple[Location, str]] = []
        seen: set[str] = set()
        for i, principle in enumerate(self.principles):
            if principle.id in seen:
                problems.append(
                    (("principles", i, "id"), f"duplicate principle id '{principle.id}'")
                )
            seen.add(principle.id)
        seen_demos: set[str] = set()
        by_id = {p.id: p for p in self.principles}
        for i, demo in enumerate(self.demonstrations):
            if demo.id in seen_demos:
                problems.append(
                    (("demonstrations", i, "id"), f"duplicate demonstration id '{demo.id}'")
                )
            seen_demos.add(demo.id)
            target = by_id.get(demo.principle)
            if target is None:
                problems.append(
                    (("demonstrations", i, "principle"), f"unknown principle '{demo.principle}'")
                )
            elif target.critique is None:
                problems.append(
                    (
                        ("demonstrations", i, "principle"),
                        f"principle '{demo.principle}' has no critique/revision pair to show",
                    )
                )
        return problems

    @cached_property
    def sha256(self) -> str:
        """A stable hash of the content (not the formatting) of the constitution.

        A principle without ``checks``, ``source`` or ``tests`` hashes as it did before those
        fields existed, so runs of the constitutions written then stay cached.
        """
        content = self.model_dump(mode="json")
        for principle in content["principles"]:
            for optional in ("checks", "source", "tests"):
                if not principle[optional]:
                    del principle[optional]
        return hashlib.sha256(canonical_json(content).encode()).hexdigest()

    def part(self, name: str) -> Any:
        """One part of the constitution as data (:data:`PARTS`): what a stage reads of it."""
        if name == "brief":
            return self.brief
        if name == "demonstrations":
            return [d.model_dump(mode="json") for d in self.demonstrations]
        fields = {"critique": ("critique", "revision"), "comparison": ("comparison",),
                  "checks": ("checks",)}[name]  # fmt: skip
        return [{"id": p.id, "priority": p.priority, **{f: getattr(p, f) for f in fields}}
                for p in self.principles if any(getattr(p, f) for f in fields)]  # fmt: skip

    def digest(self, *parts: str) -> str:
        """A hash of ``parts`` only: a stage keyed by it reruns when they change, and not when
        the rest of the constitution does (``charter constitution diff`` lists which)."""
        content = {name: self.part(name) for name in parts}
        return hashlib.sha256(canonical_json(content).encode()).hexdigest()

    @cached_property
    def critique_principles(self) -> tuple[Principle, ...]:
        return tuple(p for p in self.principles if p.critique is not None)

    @cached_property
    def comparison_principles(self) -> tuple[Principle, ...]:
        return tuple(p for p in self.principles if p.comparison is not None)

    @cached_property
    def brief(self) -> str:
        """The constitution as every model role reads it: spec, priority order, hard constraints.

        Critic, reviser, labeller and judge prompts open with it (``--dry-run`` shows them);
        empty when the constitution has none of the three.
        """
        parts = [self.spec.strip()] if self.spec else []
        ranked = sorted((p for p in self.principles if p.priority is not None),
                        key=lambda p: (p.priority or 0, p.id))  # fmt: skip
        if ranked:
            order = ", ".join(f"{p.id} ({p.priority})" for p in ranked)
            parts.append(f"Principles by priority (1 is most important): {order}.")
        if self.hard_constraints:
            lines = "\n".join(f"- {c}" for c in self.hard_constraints)
            parts.append(f"Hard constraints (never crossed, whatever the request says):\n{lines}")
        return "\n\n".join(parts)

    def principle(self, principle_id: str) -> Principle:
        for p in self.principles:
            if p.id == principle_id:
                return p
        raise KeyError(principle_id)

    def sample(self, rng: random.Random) -> Principle:
        """Draw a critique/revision principle uniformly at random, with replacement."""
        if not self.critique_principles:
            raise CharterError(f"constitution '{self.name}' has no critique/revision principles")
        return rng.choice(self.critique_principles)

    def sample_comparison(self, rng: random.Random) -> Principle:
        """Draw a comparison principle uniformly at random, with replacement."""
        if not self.comparison_principles:
            raise CharterError(f"constitution '{self.name}' has no comparison principles")
        return rng.choice(self.comparison_principles)


# What a stage can read of a constitution: critique/revision texts, comparison questions,
# yes/no checks, the few-shot demonstrations, and the brief (spec, priority order, hard
# constraints) that every model role's system message carries.
PARTS = ("critique", "comparison", "checks", "demonstrations", "brief")


def bundled_names() -> list[str]:
    return bundled.bundled_names("constitutions", ".yaml")


def resolve(source: str | Path) -> Path:
    """A constitution path: an existing file, or the file of a bundled name."""
    return bundled.resolve_bundled(
        source, "constitutions", ".yaml", ("constitution", "constitution")
    )


def _describe(loc: Location, data: Any) -> str:
    """A readable field path, naming the principle or demonstration by id when it has one."""
    text = ""
    node = data
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
        node = node[part] if _has(node, part) else None
        if isinstance(part, int) and isinstance(node, dict) and isinstance(node.get("id"), str):
            text += f" (id '{node['id']}')"
    return text or "file"


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field (check the spelling; see `charter constitution show default`)"
    return plain_words(error)
