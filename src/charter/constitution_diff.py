"""``charter constitution diff OLD NEW``: what changed between two constitutions, and what
that invalidates.

Principles are matched by id: added, removed, or changed (which fields). Hard constraints are
compared as lists of lines; the spec as text. The changed *parts*
(:data:`charter.constitution.PARTS`) name the stages whose prompts carry them
(:func:`charter.stages.constitution_parts`); those stages, and the ones downstream of them,
are the ones ``charter run`` reruns after the edit, because their keys cover exactly those
parts. Given a run root, the diff also counts the rows of its data that drew a changed or
removed principle (SFT rows, labels: their ``principle_ids``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charter.constitution import PARTS, Constitution

FIELDS = ("tags", "priority", "critique", "revision", "comparison", "checks", "source", "tests")
STAGES = ("calibrate", "baseline", "revise", "verify", "label", "rl-heldout", "rl-prompts",
          "evaluate")  # fmt: skip


@dataclass
class Diff:
    """Two constitutions compared."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)  # principle id → fields
    hard_added: list[str] = field(default_factory=list)
    hard_removed: list[str] = field(default_factory=list)
    spec_changed: bool = False
    demonstrations_changed: bool = False
    parts: list[str] = field(default_factory=list)  # PARTS whose content differs

    @property
    def principles(self) -> set[str]:
        """Ids whose rows no longer stand for the new constitution: changed or removed."""
        return {*self.changed, *self.removed}

    def stages(self, teacher: bool) -> list[str]:
        """The stages whose prompts carry a changed part (downstream ones follow them)."""
        from charter.stages import constitution_parts

        return [s for s in STAGES if set(constitution_parts(s, teacher)) & set(self.parts)]


def diff(old: Constitution, new: Constitution) -> Diff:
    out = Diff()
    before = {p.id: p for p in old.principles}
    after = {p.id: p for p in new.principles}
    out.added = [i for i in after if i not in before]
    out.removed = [i for i in before if i not in after]
    for pid in (i for i in after if i in before):
        fields = [f for f in FIELDS if getattr(before[pid], f) != getattr(after[pid], f)]
        if fields:
            out.changed[pid] = fields
    out.hard_added = [c for c in new.hard_constraints if c not in old.hard_constraints]
    out.hard_removed = [c for c in old.hard_constraints if c not in new.hard_constraints]
    out.spec_changed = (old.spec or "") != (new.spec or "")
    out.demonstrations_changed = old.demonstrations != new.demonstrations
    out.parts = [p for p in PARTS if old.digest(p) != new.digest(p)]
    return out


def run_rows(root: Path, principles: set[str]) -> list[tuple[str, str, int, int]]:
    """For each stage folder of the run at ``root`` (its ``run.json``) and each JSONL file
    in it whose rows name principles: (stage, file, rows naming a principle in
    ``principles``, rows)."""
    plan = json.loads((root / "run.json").read_text("utf-8"))
    found = []
    for name, stage in plan["stages"]:
        folder = Path(stage["path"])
        for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
            hit = total = 0
            for line in path.read_text("utf-8").splitlines():
                ids = _principle_ids(json.loads(line)) if line.strip() else None
                if ids is None:
                    continue
                total += 1
                hit += bool(ids & principles)
            if total:
                found.append((name, path.name, hit, total))
    return found


def _principle_ids(row: Any) -> set[str] | None:
    """The principle ids a row names (SFT rows, labels' votes), or None when it names none."""
    if not isinstance(row, dict):
        return None
    if isinstance(row.get("principle_ids"), list):
        return set(row["principle_ids"])
    votes = row.get("votes")
    if isinstance(votes, list) and votes:
        return {i for v in votes if isinstance(v, dict) for i in v.get("principle_ids", [])}
    return None
