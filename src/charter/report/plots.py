"""The report's plots, drawn with matplotlib as SVG text (no files, no network)."""

from __future__ import annotations

import base64
import io
from typing import Any

# The frontier's axes, in order of preference: the first metric a run has is used.
HELPFULNESS = (("helpfulness", "elo", "Elo (pairwise, judged)"),
               ("helpfulness", "instructions_prompt_level", "instructions followed"))  # fmt: skip


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "svg.fonttype": "none", "axes.spines.top": False,
                         "axes.spines.right": False})  # fmt: skip
    return plt


def data_uri(svg: str) -> str:
    """An SVG as an image source: drawn inside ``<img>``, where no script in it runs."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def _metric(results: dict[str, Any], suite: str, name: str, model: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = results["suites"].get(suite, {}).get(model, {}).get(name)
    return found


def frontier(results: dict[str, Any]) -> str | None:
    """Harmlessness against helpfulness, and over-refusal against attack success, per model."""
    models = results["models"]
    axis = next(
        (a for a in HELPFULNESS if all(_metric(results, a[0], a[1], m) for m in models)), None
    )
    harm = [_metric(results, "harmlessness", "attack_success_rate", m) for m in models]
    refusal = [_metric(results, "over-refusal", "refusal_rate", m) for m in models]
    if not all(harm):
        return None
    plt = _pyplot()
    figure, panels = plt.subplots(1, 2, figsize=(10, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, model in enumerate(models):
        colour, h = colours[index % len(colours)], harm[index]
        assert h is not None
        y, y_err = 1 - h["value"], [[h["high"] - h["value"]], [h["value"] - h["low"]]]
        if axis is not None:
            helpful = _metric(results, axis[0], axis[1], model)
            assert helpful is not None
            x_err = [[helpful["value"] - helpful["low"]], [helpful["high"] - helpful["value"]]]
            panels[0].errorbar(helpful["value"], y, xerr=x_err, yerr=y_err, fmt="o",
                               color=colour, capsize=4, label=model)  # fmt: skip
        r = refusal[index]
        if r is not None:
            r_err = [[r["value"] - r["low"]], [r["high"] - r["value"]]]
            panels[1].errorbar(r["value"], h["value"], xerr=r_err,
                               yerr=[[h["value"] - h["low"]], [h["high"] - h["value"]]], fmt="o",
                               color=colour, capsize=4, label=model)  # fmt: skip
    panels[0].set_xlabel(f"helpfulness: {axis[2]} →" if axis else "helpfulness (not measured)")
    panels[0].set_ylabel("harmlessness: 1 − attack success rate →")
    panels[0].set_title("The frontier: up and right is better")
    panels[1].set_xlabel("over-refusal rate on safe prompts ←")
    panels[1].set_ylabel("attack success rate ←")
    panels[1].set_title("Safer without refusing everything: down and left")
    for panel in panels:
        panel.grid(alpha=0.3)
        if panel.has_data():
            panel.legend(fontsize=8, loc="best")
    figure.tight_layout()
    return _svg(figure)


def principle_bars(principles: dict[str, dict[str, Any]]) -> str:
    """Per principle: how often its critique led to a real change, and its label margin."""
    plt = _pyplot()
    names = list(principles)
    figure, panels = plt.subplots(1, 2, figsize=(10, 0.35 * len(names) + 1.5), sharey=True)
    columns = (("change_rate", "revisions that changed the answer"),
               ("mean_margin", "label margin |p − 0.5|"))  # fmt: skip
    for panel, (column, label) in zip(panels, columns, strict=True):
        values = [principles[n].get(column) or 0.0 for n in names]
        panel.barh(names, values, color="#4c72b0")
        panel.set_xlabel(label)
        panel.grid(axis="x", alpha=0.3)
    panels[0].invert_yaxis()
    figure.tight_layout()
    return _svg(figure)


def losses(curves: dict[str, list[tuple[int, float]]]) -> str:
    """Training loss per step, one panel per training stage."""
    plt = _pyplot()
    kinds = [k for k, v in curves.items() if v]
    figure, panels = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.2), squeeze=False)
    for panel, kind in zip(panels[0], kinds, strict=True):
        steps, values = zip(*curves[kind], strict=True)
        panel.plot(steps, values, marker="o", markersize=3)
        panel.set_title(f"{kind.upper()} loss")
        panel.set_xlabel("optimiser step")
        panel.grid(alpha=0.3)
    figure.tight_layout()
    return _svg(figure)


def rounds(summaries: list[dict[str, Any]]) -> str:
    """Held-out reward and KL to the SFT model per online round, with 95% intervals."""
    plt = _pyplot()
    figure, panels = plt.subplots(1, 2, figsize=(10, 3.2))
    x = [s["round"] for s in summaries]
    for panel, key, label in ((panels[0], "reward", "held-out reward →"),
                              (panels[1], "kl", "KL to the SFT model (nats) ←")):  # fmt: skip
        values = [s[key]["value"] for s in summaries]
        errors = [[v - s[key]["low"] for v, s in zip(values, summaries, strict=True)],
                  [s[key]["high"] - v for v, s in zip(values, summaries, strict=True)]]  # fmt: skip
        panel.errorbar(x, values, yerr=errors, fmt="o-", capsize=4)
        panel.set_xlabel("online round (0: offline DPO)")
        panel.set_ylabel(label)
        panel.set_xticks(x)
        panel.grid(alpha=0.3)
    figure.tight_layout()
    return _svg(figure)


def accuracies(rows: list[tuple[str, dict[str, Any], dict[str, Any] | None]]) -> str:
    """Each kept principle's accuracy on the select split (where it was chosen) and on the
    test split (where it was not), with 95% intervals, against chance."""
    plt = _pyplot()
    figure, panel = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.2))
    names = [text if len(text) <= 60 else text[:57] + "…" for text, _, _ in rows]
    splits = (("select split (chosen here)", [select for _, select, _ in rows], -0.15),
              ("test split (held out)", [test for _, _, test in rows], 0.15))  # fmt: skip
    for label, estimates, offset in splits:
        shown = [(i, e) for i, e in enumerate(estimates) if e]
        if not shown:
            continue
        values = [e["value"] for _, e in shown]
        errors = [[e["value"] - e["low"] for _, e in shown],
                  [e["high"] - e["value"] for _, e in shown]]  # fmt: skip
        panel.errorbar(values, [i + offset for i, _ in shown], xerr=errors, fmt="o",
                       capsize=3, label=label)  # fmt: skip
    panel.axvline(0.5, color="#999", linestyle="--", linewidth=1)
    panel.set_yticks(range(len(rows)), names)
    panel.set_ylim(len(rows) - 0.5, -0.5)  # the first principle on top
    panel.set_xlim(0, 1)
    panel.set_xlabel("accuracy: the preferred reply picked (chance 0.5) →")
    panel.grid(axis="x", alpha=0.3)
    panel.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return _svg(figure)
