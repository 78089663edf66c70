"""``charter report``: one self-contained HTML file for a ``charter run`` directory, or for
the folder of one ``charter evaluate``.

What it shows: the before/after table of every evaluation metric with its interval; the
labeller's calibration next to it; plots (the harmlessness–helpfulness frontier of every
model, per-principle bars, training loss); and browsable examples — each prompt's initial
answer, every critique and revision with its principle, the final answer; preference pairs
with their soft labels; every judged evaluation item — filtered by principle and searched by
text in the page. For the code suite, the revision loop's costs and visible-test trail
(:mod:`charter.report.code`).

Model output is untrusted. The page is rendered by Jinja2 with autoescaping on, the plots
are PNG-free SVG inside ``<img src="data:…">`` (a script in an image never runs), and a
Content-Security-Policy allows only the page's own inline script, by its hash, so even a
missed escape could not run anything. Viewing needs no network.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from charter.errors import CharterError
from charter.records import EvalItem, Label, Trace
from charter.report.code import code_tables
from charter.runs import read_jsonl
from charter.stage_files import EstimateShape, read_stage_json, read_stage_text
from charter.stages.guided import GuidedRow
from charter.stages.rl_reward import SUMMARY, RoundSummary

if TYPE_CHECKING:
    import jinja2

TEMPLATE = "template.html.j2"
SCRIPT = "filter.js"
MAX_EXAMPLES = 300  # per section: the page stays quick to open


def environment() -> jinja2.Environment:
    """The Jinja2 environment of Charter's pages: autoescaped, strict about missing values,
    with the ``num`` filter; one clear error without the report extra."""
    try:
        import jinja2
        import matplotlib  # noqa: F401  (the plots)
    except ImportError as err:
        raise CharterError(
            f"charter report needs the report extra ({err.name} is missing): "
            "pip install 'charter[report]'"
        ) from None
    found = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
        undefined=jinja2.StrictUndefined,
    )  # fmt: skip
    found.filters["num"] = _num
    return found


def build_report(stages: dict[str, Path], title: str = "Charter run") -> str:
    """The HTML of the report for a run's stage directories (by stage name)."""
    template = environment().get_template(TEMPLATE)  # first: it checks the report extra
    from charter.report import plots

    results = read_stage_json(stages.get("evaluate"), "results.json", _Results) or read_stage_json(
        stages.get("baseline"), "results.json", _Results
    )
    principles = _principles(stages)
    losses = {kind: _losses(stages.get(kind)) for kind in ("sft", "dpo")}
    traces = _records(stages.get("revise"), "traces.jsonl", Trace)
    guided = _records(stages.get("revise"), "guided.jsonl", GuidedRow)  # the teacher recipe
    labels = _records(stages.get("label"), "labels.jsonl", Label)
    rounds = _rounds(stages)
    evaluated = stages.get("evaluate") or stages.get("baseline")
    items = _records(evaluated, "items.jsonl", EvalItem)
    code = code_tables(evaluated, results["models"] if results else [])
    figures = {
        "frontier": plots.frontier(results) if results else None,
        "principles": plots.principle_bars(principles) if principles else None,
        "loss": plots.losses(losses) if any(losses.values()) else None,
        "rounds": plots.rounds(rounds) if rounds else None,
    }
    script = (Path(__file__).with_name(SCRIPT)).read_text("utf-8")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    all_principles = sorted(
        {s.principle_id for t in traces for s in t.steps}
        | {g.principle_id for g in guided if g.principle_id}
        | {p for label in labels for v in label.votes for p in v.principle_ids}
    )
    return template.render(
        title=title, results=results,
        calibration=read_stage_json(stages.get("calibrate"), "calibration.json", _Calibration),
        principles=principles, figures={k: plots.data_uri(v) for k, v in figures.items() if v},
        traces=traces[:MAX_EXAMPLES], labels=labels[:MAX_EXAMPLES],
        items=_spread(items, MAX_EXAMPLES * 2), guided=guided[:MAX_EXAMPLES],
        guided_counts=read_stage_json(stages.get("revise"), "manifest.json"),
        all_principles=all_principles, counts={"traces": len(traces), "labels": len(labels),
                                               "items": len(items), "guided": len(guided)},
        script=script, script_hash=f"sha256-{digest}", stages=stages,
        stage_counts=_stage_counts(stages), rounds=rounds, code=code,
    )  # fmt: skip


PLAN, REPORT = "run.json", "report.html"  # written by charter run into its root
EVALUATED = "results.json"  # written by charter evaluate into its folder when it finishes


class _Results(BaseModel):
    """What the page and the plots read of an evaluation's results.json."""

    models: list[str]
    suites: dict[str, dict[str, dict[str, EstimateShape]]]
    differences: dict[str, dict[str, dict[str, EstimateShape]]] = {}
    lower_is_better: list[str] = []
    refusal_layer: str = ""
    judge: str | None = None
    pairwise_judge: str | None = None
    warnings: list[str] = []


class _Calibration(BaseModel):
    """What the page reads of calibration.json (a CalibrationReport; older files may carry
    fields this version does not know, so this view ignores extra ones)."""

    labeller: str
    gold: str
    pairs: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    ece: float
    mean_margin: float
    prefers_a: float
    flip_rate: float | None = None
    at_chance: bool
    position_biased: bool


def _spread(items: list[EvalItem], limit: int) -> list[EvalItem]:
    """At most ``limit`` items, taken from each suite in turn so that a suite late in the file
    (the constitution's clauses come last) still shows; each suite's items keep their order."""
    by_suite: dict[str, list[EvalItem]] = {}
    for item in items:
        by_suite.setdefault(item.suite, []).append(item)
    queues = [iter(group) for group in by_suite.values()]
    shown: list[EvalItem] = []
    while queues and len(shown) < limit:
        for queue in list(queues):
            taken = next(queue, None)
            if taken is None:
                queues.remove(queue)
            elif len(shown) < limit:
                shown.append(taken)
    picked = {id(item) for item in shown}
    return [item for item in items if id(item) in picked]  # in the file's order


def _stage_counts(stages: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Each stage's manifest counts: what it made, resumed, skipped or filled in."""
    counts = {}
    for name, folder in stages.items():
        manifest = read_stage_json(folder, "manifest.json")
        if isinstance(manifest, dict) and isinstance(manifest.get("counts"), dict):
            counts[name] = manifest["counts"]
    return counts


def _records(folder: Path | None, name: str, record: type[Any]) -> list[Any]:
    if folder is None or not (folder / name).is_file():
        return []
    return list(read_jsonl(folder / name, record))


def _rounds(stages: dict[str, Path]) -> list[dict[str, Any]]:
    """Each online round's held-out reward (``rl-reward-R``), round 0 first."""
    found = []
    for name, folder in stages.items():
        prefix, _, number = name.rpartition("-")
        summary = read_stage_json(folder, SUMMARY, RoundSummary) if prefix == "rl-reward" else None
        if summary is not None and number.isdigit():
            found.append({"round": int(number), **summary})
    return sorted(found, key=lambda r: r["round"])


def _losses(folder: Path | None) -> list[tuple[int, float]]:
    if folder is None or not (folder / "loss.jsonl").is_file():
        return []
    path, losses = folder / "loss.jsonl", []
    for number, line in enumerate(read_stage_text(path).splitlines(), start=1):
        try:
            row = json.loads(line)
            if isinstance(row, dict) and "loss" in row and "step" in row:
                losses.append((int(row["step"]), float(row["loss"])))
        except (ValueError, TypeError, OverflowError) as err:  # int(None), int(inf)
            raise CharterError(f"{path}:{number}: not a training loss row ({err}); rerun the "
                               "training stage, or move the file away") from None  # fmt: skip
    return losses


def _principles(stages: dict[str, Path]) -> dict[str, dict[str, Any]]:
    from charter.stages.evaluate.principles import principle_stats

    revise, label = stages.get("revise"), stages.get("label")
    revise = revise if revise and (revise / "traces.jsonl").is_file() else None
    label = label if label and (label / "labels.jsonl").is_file() else None
    return principle_stats(revise, label) if revise or label else {}


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.{digits}f}"
    return str(value)


def stage_folders(root: Path) -> dict[str, Path]:
    """The stage folders of a ``charter run`` directory that exist, by stage name.

    Found by name inside ``root`` (a stage always lives in ``ROOT/STAGE-KEY``), so a run
    directory that was moved or copied still finds its own data.
    """
    plan = root / PLAN
    if not plan.is_file():
        raise CharterError(
            f"{root} has no {PLAN} or {EVALUATED}: pass the directory of a charter run or of a "
            "finished charter evaluate"
        )
    try:
        listed = json.loads(plan.read_text("utf-8"))["stages"]
        folders = {name: root / Path(stage["path"]).name for name, stage in listed.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CharterError(
            f"{plan}: not a charter run plan; rerun charter run to rewrite it"
        ) from None
    return {name: folder for name, folder in folders.items() if folder.is_dir()}


def report_for(root: Path) -> Path:
    """Write ``ROOT/report.html`` for a ``charter run`` directory, or for the folder of one
    ``charter evaluate`` (its results and items, and for code the revision loop's tables);
    returns its path.

    Stage directories are found by name inside ``root`` (a stage always lives in
    ``ROOT/STAGE-KEY``), so a run directory that was moved or copied still reports its own data.
    """
    if not (root / PLAN).is_file() and (root / EVALUATED).is_file():
        stages = {"evaluate": root}
    else:
        stages = {name: f for name, f in stage_folders(root).items() if name != "report"}
    from charter.runs import write_atomic

    path = root / REPORT
    write_atomic(path, build_report(stages, title=root.name))
    return path
