"""The evaluation's results as a terminal table: each metric with its interval, per model,
and each trained model's paired difference from the baseline.
"""

from __future__ import annotations

from typing import Any


def aligned(header: list[str], rows: list[list[Any]]) -> list[str]:
    """Columns padded to their widest cell, a rule under the header."""
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    lines = [
        "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)) for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def format_results(results: dict[str, Any]) -> str:
    """A readable table: one row per metric, one column per model, then the differences.

    Models are numbered in the header ([1] is the baseline) and named in a legend below, so
    long model paths do not make the table unreadable.
    """
    models = results["models"]
    lower = set(results.get("lower_is_better", ()))
    differences = results.get("differences", {})
    number = {m: f"[{i}]" for i, m in enumerate(models, start=1)}
    header = ["suite", "metric", *number.values()]
    header += [f"{number[m]} − [1]" for m in models[1:] if f"{m} − {models[0]}" in differences]
    rows = []
    for suite, by_model in results["suites"].items():
        names = list(dict.fromkeys(n for m in models for n in by_model.get(m, {})))
        for name in names:
            arrow = " ↓" if name in lower else " ↑"
            row = [suite, name + arrow]
            row += [_cell(by_model.get(m, {}).get(name)) for m in models]
            row += [_cell(d.get(suite, {}).get(name), signed=True) for d in differences.values()]
            rows.append(row)
    lines = aligned(header, rows)
    lines += ["", *(f"{number[m]} {m}" for m in models)]
    accuracy = results.get("refusal_held_out_accuracy") or {}
    held_out = (
        f" (held-out accuracy on XSTest answers {accuracy['classifier']:.3f}, phrases "
        f"{accuracy['phrases']:.3f})" if accuracy else ""
    )  # fmt: skip
    notes = [f"refusals judged by: {results['refusal_layer']}{held_out}"]
    if results.get("judge"):
        notes.append(f"harm and helpfulness judge: {results['judge']}")
    elif results.get("pairwise_judge"):
        notes.append(f"helpfulness judge: {results['pairwise_judge']} (the default; "
                     "`charter evaluate --judge` picks another)")  # fmt: skip
    principles = results.get("principles")
    if principles:
        lines += ["", format_principles(principles)]
    skipped = results.get("unsupported") or {}
    if skipped.get("ifeval_unsupported_instructions"):
        notes.append(
            f"IFEval: {skipped['ifeval_unsupported_instructions']} instructions without a check "
            f"left out, {skipped['ifeval_unscored_prompts']} prompts unscored"
        )
    warnings = [f"WARNING (not like for like): {w}" for w in results.get("warnings", [])]
    return "\n".join([*lines, "", "; ".join(notes) + " (↓ lower is better, ↑ higher)", *warnings])


def format_principles(principles: dict[str, dict[str, Any]]) -> str:
    columns = ("critiques", "changes", "change_rate", "mean_edit_distance", "votes", "mean_margin")
    rows = [["principle", *columns]]
    rows += [[pid, *(_plain(s.get(c)) for c in columns)] for pid, s in principles.items()]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows)


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _cell(estimate: dict[str, Any] | None, signed: bool = False) -> str:
    if not estimate:
        return "-"
    sign = "+" if signed else ""
    fmt = ".0f" if abs(estimate["value"]) >= 100 else ".3f"
    p_value = f" p={estimate['p_value']:.2g}" if "p_value" in estimate else ""
    return (f"{estimate['value']:{sign}{fmt}} [{estimate['low']:{fmt}}, {estimate['high']:{fmt}}]"
            f" n={estimate['n']}{p_value}")  # fmt: skip
