"""Slices of public prompt sets, and the check that training prompts never appear in evaluation.

A run config names its data as sources, each a file with an optional row slice after ``#``::

    ../shared/data/advbench/harmful_behaviors.csv#100:260   rows 100..259 (0-based, end excluded)
    ../shared/data/ifeval/input_data.jsonl#:200             the first 200
    contrast                                                 a bundled set, whole

:func:`materialise` writes the prompts of several sources into one JSONL file (each row keeps
``source``: the file and row it came from), so every downstream stage reads plain files and
the content hash of that file keys the cache. :func:`overlap` compares training prompts with
evaluation questions after normalising (lower case, words only): an exact match, or any
shared run of 8 words, counts as overlap; :func:`disjoint` drops those training prompts and
reports how many it dropped per set.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from charter.errors import CharterError
from charter.records import Message, Prompt
from charter.runs import file_sha256, write_atomic

NGRAM = 8
_SLICE = re.compile(r"^(?P<path>.+?)#(?P<start>\d*):(?P<stop>\d*)$")


def parse_source(source: str) -> tuple[str, int | None, int | None]:
    """``PATH#START:STOP`` → (PATH, START, STOP); no ``#`` → the whole file."""
    match = _SLICE.match(source)
    if match is None:
        if "#" in source:
            raise CharterError(f"{source}: a slice is written PATH#START:STOP, e.g. file.csv#0:60")
        return source, None, None
    start, stop = match["start"], match["stop"]
    return match["path"], int(start) if start else None, int(stop) if stop else None


def _prompts_of(path: Path) -> list[Prompt]:
    """Every prompt of a file: a prompt file Charter reads, or a HarmBench/AdvBench/XSTest CSV."""
    from charter.prompts import load_prompts
    from charter.stages.evaluate.suites import prompt_texts

    if path.suffix.lower() == ".csv":
        return [
            Prompt.from_messages([Message(role="user", content=text)], source=f"{path.name}:{i}")
            for i, (_, text) in enumerate(prompt_texts(path, safe_only=True))
        ]
    return list(load_prompts(path))


def source_path(name: str) -> Path:
    """A source's file: a path, a bundled prompt set, or a bundled evaluation set (``redteam``)."""
    from charter.bundled import bundled_names, resolve_bundled
    from charter.prompts import resolve_prompts

    evaluation_set = name in bundled_names("data/eval", ".jsonl")
    if evaluation_set and not (Path(name).is_file() or name in bundled_names("data", ".jsonl")):
        return resolve_bundled(name, "data/eval", ".jsonl", ("data", "evaluation set"))
    return resolve_prompts(name)


def source_prompts(source: str) -> list[Prompt]:
    """The prompts one source names, its slice applied, each tagged with file and row."""
    name, start, stop = parse_source(source)
    path = source_path(name)
    chosen = _prompts_of(path)[start:stop]
    offset = start or 0
    return [
        p.model_copy(update={"source": f"{Path(name).name}#{offset + i}"})
        for i, p in enumerate(chosen)
    ]


def materialise(sources: Sequence[str], folder: Path, name: str) -> Path:
    """Write the prompts of ``sources`` (in order, first copy of a prompt kept) to one file.

    The file is named by a hash of the sources and their contents, so rerunning with the same
    sources reuses it and changing one writes a new file.
    """
    digest = hashlib.sha256()
    for source in sources:
        path = source_path(parse_source(source)[0])
        digest.update(f"{source}\0{file_sha256(path)}\0".encode())
    target = folder / f"{name}-{digest.hexdigest()[:12]}.jsonl"
    if target.is_file():
        return target
    seen: set[str] = set()
    lines = []
    for source in sources:
        for prompt in source_prompts(source):
            if prompt.id in seen:
                continue
            seen.add(prompt.id)
            messages = [m.model_dump() for m in prompt.messages]
            lines.append(json.dumps({"messages": messages, "source": prompt.source},
                                    ensure_ascii=False) + "\n")  # fmt: skip
    if not lines:
        raise CharterError(f"{name}: no prompts in {', '.join(sources)}")
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(target, "".join(lines))
    return target


def raw_slice(source: str, folder: Path, name: str) -> Path:
    """A JSONL file's lines in a slice, unchanged (for sets with their own row format, IFEval)."""
    from charter.bundled import resolve_bundled

    path_name, start, stop = parse_source(source)
    if start is None and stop is None:
        return resolve_bundled(path_name, "data/eval", ".jsonl", ("data", "evaluation set"))
    path = Path(path_name)
    if not path.is_file():
        raise CharterError(f"{path}: no such file")
    key = hashlib.sha256(f"{source}\0{file_sha256(path)}".encode()).hexdigest()[:12]
    target = folder / f"{name}-{key}{path.suffix}"
    if not target.is_file():
        lines = [ln for ln in path.read_text("utf-8").splitlines(keepends=True) if ln.strip()]
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(target, "".join(lines[start:stop]))
    return target


# --- overlap ------------------------------------------------------------------------------------


def normalise(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def ngrams(text: str, n: int = NGRAM) -> set[str]:
    """Every run of ``n`` words of ``text``, normalised (overlap checks compare 8)."""
    return _grams(normalise(text), n)


def _grams(words: str, n: int = NGRAM) -> set[str]:
    parts = words.split()
    return {" ".join(parts[i : i + n]) for i in range(len(parts) - n + 1)}


def overlap(train: Iterable[str], evaluation: Iterable[str]) -> list[tuple[int, str]]:
    """Indices of ``train`` texts that match an evaluation text exactly or share an 8-gram."""
    exact: set[str] = set()
    grams: set[str] = set()
    for text in evaluation:
        words = normalise(text)
        exact.add(words)
        grams |= _grams(words)
    hits = []
    for index, text in enumerate(train):
        words = normalise(text)
        if words in exact:
            hits.append((index, "exact"))
        elif _grams(words) & grams:
            hits.append((index, "8-gram"))
    return hits


def user_text(prompt: Prompt) -> str:
    """What the overlap checks compare of a prompt: its user turns, joined."""
    return " ".join(m.content for m in prompt.messages if m.role == "user")


def disjoint(
    training: dict[str, list[Prompt]], evaluation: dict[str, list[str]]
) -> tuple[dict[str, list[Prompt]], dict[str, dict[str, int]]]:
    """Training prompts with every one that overlaps an evaluation set removed, and a report.

    The report has, per training set: prompts read, kept, and dropped per evaluation set
    and kind of match.
    """
    report: dict[str, dict[str, int]] = {}
    kept: dict[str, list[Prompt]] = {}
    for name, prompts in training.items():
        texts = [user_text(p) for p in prompts]
        dropped: set[int] = set()
        counts = {"read": len(prompts)}
        for eval_name, questions in evaluation.items():
            for index, kind in overlap(texts, questions):
                dropped.add(index)
                counts[f"{eval_name} {kind}"] = counts.get(f"{eval_name} {kind}", 0) + 1
        kept[name] = [p for i, p in enumerate(prompts) if i not in dropped]
        counts["kept"] = len(kept[name])
        report[name] = counts
    return kept, report


def first_prompts(files: dict[str, list[Path]], limit: int | None) -> dict[str, list[Prompt]]:
    """The first ``limit`` prompts of each kind; a prompt seen before (any kind) is dropped."""
    from charter.prompts import load_prompts

    seen: set[str] = set()
    chosen: dict[str, list[Prompt]] = {}
    for kind, paths in files.items():
        chosen[kind] = []
        for path in paths:
            for prompt in load_prompts(path):
                if limit is not None and len(chosen[kind]) >= limit:
                    break
                if prompt.id not in seen:
                    seen.add(prompt.id)
                    chosen[kind].append(prompt)
    return chosen
