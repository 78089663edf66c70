"""The shape of the package, checked: stages in one folder, no import circle, small modules.

A newcomer reads the tree as the pipeline (``charter/stages``, ``charter/suites``), can read
any module in one sitting, and can follow imports one way: no module imports, even lazily
inside a function, one that imports it back (``if TYPE_CHECKING:`` blocks aside).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "src" / "charter"
MAX_LINES = 400  # STYLE.md; the largest today: stages/label_run.py (388)


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The charter modules ``path`` imports anywhere, outside ``if TYPE_CHECKING:``."""
    found: set[str] = set()
    todo: list[ast.AST] = [ast.parse(path.read_text("utf-8"))]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            found.update(n for n in names if n in known)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        todo.extend(ast.iter_child_nodes(node))
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    found = modules()
    graph = {name: imports(path, set(found)) - {name} for name, path in found.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            name = todo.pop()
            if name == goal:
                return True
            if name not in seen:
                seen.add(name)
                todo.extend(graph[name])
        return False

    circles = sorted((a, b) for a in graph for b in graph[a] if reaches(b, a))
    assert circles == []


def test_modules_stay_small_and_stages_live_in_one_folder() -> None:
    sizes = {name: len(path.read_text("utf-8").splitlines()) for name, path in modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
    stages = {p.stem for p in (PACKAGE / "stages").iterdir()}
    assert {"calibrate", "revise", "guided", "label", "verdict_pairs", "train", "evaluate",
            "export"} <= stages  # fmt: skip
    suites = {p.stem for p in (PACKAGE / "suites").glob("*.py")}
    assert {"harmlessness", "over_refusal", "helpfulness", "honesty", "code"} <= suites
