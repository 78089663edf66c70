"""Ray Data execution of ``revise`` and ``label`` (``--executor ray``): one backend per worker.

    charter revise --executor ray --workers 2 --prompts demo-redteam --out runs/r
    charter label --executor ray --ray-address auto --workers 8 --prompts p.jsonl --out runs/l

The driver (the process running the command) keeps everything that touches the run
directory, as with the local executor: it reads the inputs, skips the ids already written,
and writes every record that comes back through the same code, so ids, resume and the
manifest do not depend on the executor. Ray runs only the stage function: the pending inputs
become a Ray dataset and ``map_batches`` hands batches of ``batch_size`` to a pool of
``workers`` actors. Each actor builds its backends once, by name (an embedded llama.cpp
engine with as many threads as the CPUs Ray gave the actor, or a client of a shared server
fleet), and runs :func:`~charter.stages.revise.revise`, :func:`~charter.pairs.sample_answers` or
:func:`~charter.stages.label.label` over each batch, sending the records back as JSON. Records
arrive in the order they finish; principles and seeds are drawn per record id, so no output
depends on which worker made it.

The pending inputs (not the outputs) are held in the driver's memory to make the dataset.
Ray is an optional extra (``pip install 'charter[ray]'``), imported only when a run uses it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from charter.backends import Backend, GenerationConfig, load_backend
from charter.backends.base import token_totals
from charter.backends.local import LocalBackend, usable_cores
from charter.constitution import Constitution
from charter.errors import CharterError
from charter.pairs import sample_answers
from charter.records import Label, PreferencePair, Prompt, Samples, Trace, Usage
from charter.stages.label import LabelConfig, label
from charter.stages.revise import ReviseConfig, revise

RAY_MISSING = "--executor ray needs Ray, which is not installed: pip install 'charter[ray]'"
OnCalls = Callable[[int], object] | None


def import_ray() -> ModuleType:
    """Ray, or the one-line error that names the extra to install."""
    try:
        import ray
    except ImportError:
        raise CharterError(RAY_MISSING, exit_code=1) from None
    return ray


@dataclass(frozen=True)
class BackendSpec:
    """How a worker builds its own copy of a backend: the name and the connection options."""

    name: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never shown
    concurrency: int | None = None

    def build(self, cpus: int) -> Backend:
        remote = self.name.startswith("openai/")  # the options reach openai/… only (as the CLI)
        backend = load_backend(
            self.name, base_url=self.base_url if remote else None,
            api_key=self.api_key if remote else None, concurrency=self.concurrency,
        )  # fmt: skip
        if isinstance(backend, LocalBackend):
            # The engine sizes its threads by the CPU affinity, which Ray leaves at every core
            # of the node; it gets the CPUs Ray reserved for this worker instead.
            backend.threads = cpus
        return backend


# --- what a worker runs: one job per stage --------------------------------------------------


@dataclass(frozen=True)
class _ReviseJob:
    constitution: Constitution
    config: ReviseConfig
    backends: dict[str, BackendSpec]  # "model", and "critic" when it is another model

    def run(self, lines: list[str], backends: dict[str, Backend]) -> Iterator[BaseModel]:
        prompts = [Prompt.model_validate_json(line) for line in lines]
        return revise(prompts, constitution=self.constitution, backend=backends["model"],
                      config=self.config, critic=backends.get("critic"))  # fmt: skip


@dataclass(frozen=True)
class _SampleJob:
    samples: int
    config: GenerationConfig
    backends: dict[str, BackendSpec]  # "policy"

    def run(self, lines: list[str], backends: dict[str, Backend]) -> Iterator[BaseModel]:
        prompts = [Prompt.model_validate_json(line) for line in lines]
        return sample_answers(prompts, backends["policy"], samples=self.samples,
                              config=self.config, batch_size=len(prompts))  # fmt: skip


@dataclass(frozen=True)
class _LabelJob:
    constitution: Constitution
    config: LabelConfig
    backends: dict[str, BackendSpec]  # "labeller"

    def run(self, lines: list[str], backends: dict[str, Backend]) -> Iterator[BaseModel]:
        pairs = [PreferencePair.model_validate_json(line) for line in lines]
        return label(pairs, constitution=self.constitution, labeller=backends["labeller"],
                     config=self.config)  # fmt: skip


_Job = _ReviseJob | _SampleJob | _LabelJob


class _Worker:
    """A Ray actor: builds its backends once, then runs the job on each batch it is given.

    A :class:`CharterError` (a bad model path, a server that does not answer) comes back as
    data, because Ray delivers a worker's exception as a traceback in a string; the driver
    raises it again as the one-line error it is.
    """

    def __init__(self, job: _Job, cpus: int) -> None:
        self.job, self.cpus = job, cpus
        self.backends: dict[str, Backend] = {}

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        lines = [str(line) for line in batch["json"]]
        try:
            if not self.backends:  # built here, not in __init__, so errors come back as data
                self.backends = {role: s.build(self.cpus) for role, s in self.job.backends.items()}
            before = self._totals()
            records = [r.model_dump_json() for r in self.job.run(lines, self.backends)]
        except CharterError as err:
            return {"json": [""], "totals": ["{}"], "error": [str(err)]}
        # The backends' own token counts (scoring calls are in no record), once per batch.
        spent = {role: (now - before[role]).model_dump() for role, now in self._totals().items()}
        totals = [json.dumps(spent)] + ["{}"] * (len(records) - 1)
        return {"json": records, "totals": totals[: len(records)], "error": [""] * len(records)}

    def _totals(self) -> dict[str, Usage]:
        """Each backend's running token count, where it keeps one."""
        counts = {role: token_totals(backend) for role, backend in self.backends.items()}
        return {role: totals for role, totals in counts.items() if totals is not None}


# --- the driver -----------------------------------------------------------------------------


@dataclass
class RayExecutor:
    """Runs a stage's model calls on Ray workers; the driver writes what they return.

    ``address`` is a cluster to join (``auto`` or ``HOST:PORT``); None starts a local one in
    this process, with every core of the machine, stopped again by :meth:`close`. The
    connection options reach each worker's backends as they reach the driver's.
    """

    address: str | None = None
    workers: int = 1
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never shown or written
    concurrency: int | None = None
    _started: bool = field(default=False, repr=False)

    def describe(self) -> dict[str, Any]:
        """What the manifest records (outside the fingerprint: a run may change executor)."""
        return {
            "name": "ray", "address": self.address or "local", "workers": self.workers,
            "ray": metadata.version("ray"),
        }  # fmt: skip

    def revise(
        self, prompts: Iterable[Prompt], *, constitution: Constitution, backend: Backend,
        config: ReviseConfig, on_calls: OnCalls = None, critic: Backend | None = None,
    ) -> Iterator[Trace]:  # fmt: skip
        """:func:`charter.stages.revise.revise` on the workers; traces in the order they finish."""
        local = {"model": backend, "critic": critic}
        job = _ReviseJob(constitution, config, self._specs(local))
        for line in self._map(job, prompts, config.batch_size, local):
            if on_calls is not None:
                on_calls(1 + 2 * config.rounds)
            yield Trace.model_validate_json(line)

    def sample(
        self, prompts: Iterable[Prompt], policy: Backend, *, samples: int,
        config: GenerationConfig, batch_size: int = 16, on_calls: OnCalls = None,
    ) -> Iterator[Samples]:  # fmt: skip
        """:func:`charter.pairs.sample_answers` on the workers."""
        local: dict[str, Backend | None] = {"policy": policy}
        job = _SampleJob(samples, config, self._specs(local))
        for line in self._map(job, prompts, batch_size, local):
            if on_calls is not None:
                on_calls(samples)
            yield Samples.model_validate_json(line)

    def label(
        self, pairs: Iterable[PreferencePair], *, constitution: Constitution, labeller: Backend,
        config: LabelConfig, on_calls: OnCalls = None,
    ) -> Iterator[Label]:  # fmt: skip
        """:func:`charter.stages.label.label` on the workers."""
        local: dict[str, Backend | None] = {"labeller": labeller}
        job = _LabelJob(constitution, config, self._specs(local))
        for line in self._map(job, pairs, config.batch_size, local):
            entry = Label.model_validate_json(line)
            if on_calls is not None:  # one scoring pass per order of each vote (cot: and reasoning)
                passes = sum(1 if v.p_shown_second is None else 2 for v in entry.votes)
                on_calls(passes * (2 if config.mode == "cot" else 1))
            yield entry

    def close(self) -> None:
        """Stop the local cluster this executor started (a joined cluster keeps running)."""
        if self._started:
            import_ray().shutdown()
            self._started = False

    def _specs(self, backends: dict[str, Backend | None]) -> dict[str, BackendSpec]:
        return {
            role: BackendSpec(backend.name, self.base_url, self.api_key, self.concurrency)
            for role, backend in backends.items()
            if backend is not None
        }

    def _map(
        self, job: _Job, items: Iterable[BaseModel], batch_size: int,
        local: dict[str, Backend | None],
    ) -> Iterator[str]:  # fmt: skip
        """The records the workers make of ``items``, as JSON lines."""
        rows = [{"json": item.model_dump_json()} for item in items]
        if not rows:  # a finished run's rerun starts no cluster
            return
        ray = self._connect()
        cpus = self._cpus_per_worker(ray)
        # One block per batch, and batches small enough that every worker gets one.
        batch_size = min(batch_size, math.ceil(len(rows) / self.workers))
        dataset = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / batch_size))
        results = dataset.map_batches(
            _Worker, fn_constructor_args=(job, cpus), batch_size=batch_size,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=self.workers),
            num_cpus=cpus,
        )  # fmt: skip
        for row in results.iter_rows():
            if row["error"]:
                raise CharterError(str(row["error"]))
            for role, spent in json.loads(str(row["totals"])).items():
                # The driver's backend stands for the workers' ones in the manifest.
                backend: Any = local[role]
                backend.totals += Usage.model_validate(spent)
            yield str(row["json"])

    def _connect(self) -> ModuleType:
        ray = import_ray()
        if not ray.is_initialized():
            if self.address is None:
                ray.init(num_cpus=usable_cores(), include_dashboard=False,
                         logging_level=logging.WARNING)  # fmt: skip
            else:
                ray.init(address=self.address, logging_level=logging.WARNING)
            self._started = True
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows its own bar
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # Ray warns once that its bars are off (which is the point); its other warnings stay.
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        return ray

    def _cpus_per_worker(self, ray: ModuleType) -> int:
        """An equal share of the cluster's CPUs per worker, no more than one node holds."""
        nodes = [node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node["Alive"]]
        share = min(int(sum(nodes) // self.workers), int(max(nodes, default=0.0)))
        if share < 1:
            raise CharterError(
                f"--workers {self.workers} needs at least {self.workers} CPUs; the Ray cluster "
                f"has {sum(nodes):g}"
            )
        return share
