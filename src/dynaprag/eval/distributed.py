"""Distributed evaluation on Ray: the same run folders, answered by a pool of model replicas.

``dynaprag eval --ray`` and ``dynaprag reproduce --ray`` run here. The driver opens every
(dataset, method) run folder exactly as the single-process runner does
(:func:`dynaprag.eval.run_folder.open_run`: lock, config check, resume), cuts the questions still to
do into small shards (:mod:`dynaprag.eval.shards`), and hands them to ``workers`` Ray actors
(:class:`~dynaprag.eval.ray_worker.EvalWorker`, one model replica each, ``threads_per_worker``
CPUs and ``gpus_per_worker`` GPUs) as they free up. Records are appended to each folder's
``records.jsonl`` in question order as shards finish (a shard that finishes early waits in
memory, :class:`~dynaprag.eval.runner.InOrder`), so ``report``, resume and every other tool read
a Ray run as any other. Greedy decoding in the same dtype gives the single-process records.

Faults:

* a worker that dies (killed, out of memory, its node lost) costs only its shard: the shard goes
  back to the front of the queue for the next free worker, and Ray restarts the actor
  (``max_restarts``), which rejoins the pool once it has loaded the model again. Shard calls are not retried
  by Ray itself (``max_task_retries=0``) so that the lost shard goes to whichever actor is free
  first instead of waiting for its own actor to reload the model; nothing is recorded twice,
  since only the driver writes and it writes each question once;
* a killed driver loses at most the answers it held: rerun the same command and it resumes;
* a question that raises is recorded as an error record (:func:`~dynaprag.eval.records.make_error_record`,
  counted as ``errors`` in the summary) and its shard goes on; a failure outside a question
  (a model that does not load on a node) stops the run with that worker's one-line message.

``config.json`` records the workers under ``ray``; a run may resume with other workers, or
without Ray (how a run is spread is not part of what it computes).

>>> from dynaprag.eval.experiment import resolve
>>> cells = [cell(*resolve("hotpotqa", data_dir="data", method=m), f"runs/{m}")
...          for m in ("sr-rag", "dragin")]                                  # doctest: +SKIP
>>> summaries = evaluate_on_ray(cells, RayEvalConfig(workers=2))             # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from dynaprag.cluster import ClusterConfig, ray_session
from dynaprag.eval.datasets import Example
from dynaprag.eval.records import make_error_record, make_record
from dynaprag.eval.run_folder import CONFIG, OpenRun, RunError, open_run
from dynaprag.eval.runner import InOrder
from dynaprag.eval.shards import Shard, ShardQueue, cut_shards

__all__ = ["Cell", "RayEvalConfig", "cell", "evaluate_on_ray", "run_on_ray"]

#: seconds without any news from the workers before the driver says what it waits for
_PATIENCE_S = 120


@dataclass
class RayEvalConfig:
    """Where to run and how wide: the ``--ray`` flags of ``eval`` and ``reproduce``."""

    address: str | None = field(default=None, metadata={
        "help": "a running cluster (auto, HOST:PORT, ray://HOST:10001); None = a local one for the run"})
    workers: int | None = field(default=None, metadata={
        "help": "model replicas (Ray actors); None = as many as the cluster's CPUs (GPUs) allow"})
    threads_per_worker: int = field(default=1, metadata={"help": "CPUs (torch threads) per worker"})
    gpus_per_worker: float = field(default=0.0, metadata={"help": "GPUs per worker (the model runs on cuda)"})
    shard_size: int | None = field(default=None, metadata={
        "help": "questions per shard; None = twice the batch size (small: a short tail, little lost with a worker)"})
    max_restarts: int = field(default=4, metadata={"help": "times Ray restarts a worker that died"})
    shard_attempts: int = field(default=2, metadata={
        "help": "losses of a shard before it is split into single questions (see dynaprag.eval.shards)"})
    startup_timeout_s: int = field(default=120, metadata={"help": "seconds a local cluster may take to start"})

    def cluster(self) -> ClusterConfig:
        """The cluster to join, or a local one with the CPUs of every worker."""
        workers = self.workers or max(1, (os.cpu_count() or 1) // max(1, self.threads_per_worker))
        return ClusterConfig(address=self.address, num_cpus=None if self.address else workers * self.threads_per_worker,
                             startup_timeout_s=self.startup_timeout_s)

    def size(self, resources: dict) -> int:
        """The number of workers on a cluster offering ``resources`` (``ray.cluster_resources()``)."""
        fit = int(resources.get("CPU", 0) // max(1, self.threads_per_worker))
        if self.gpus_per_worker > 0:
            fit = min(fit, int(resources.get("GPU", 0) // self.gpus_per_worker))
        if self.workers is None:
            if fit < 1:
                raise RunError(f"the Ray cluster has {resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} "
                               f"GPUs: not enough for one worker of {self._shape()}")
            return fit
        if self.workers > fit:
            raise RunError(f"--workers {self.workers} of {self._shape()} do not fit the Ray cluster "
                           f"({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs); ask for at most "
                           f"{fit}, or omit --workers to fill it")
        return self.workers

    def _shape(self) -> str:
        gpus = f" and {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        return f"{self.threads_per_worker} CPU{gpus}"


@dataclass
class Cell:
    """One (dataset, method) run folder of a distributed evaluation: its questions and settings."""

    out: Path
    examples: list[Example]
    config: dict  # config.json without its "ray" entry
    pipe_cfg: Any
    label: str
    adopt: bool = False

    @property
    def batch_size(self) -> int:
        return self.config.get("batch_size", 1)


def cell(run_cfg: Any, pipe_cfg: Any, out: str | Path, label: str | None = None, *, adopt: bool = False) -> Cell:
    """The :class:`Cell` of ``(run_cfg, pipe_cfg)`` (from :func:`dynaprag.eval.experiment.resolve`) into ``out``."""
    from dynaprag.eval.experiment import load_run_examples, resolved_dict

    return Cell(Path(out), load_run_examples(run_cfg, pipe_cfg.retrieval.corpus), resolved_dict(run_cfg, pipe_cfg),
                pipe_cfg, label or f"{run_cfg.dataset} {pipe_cfg.method}", adopt)


def run_on_ray(run_cfg: Any, pipe_cfg: Any, out: str | Path, config: RayEvalConfig, *, progress: bool = True,
               adopt: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """``dynaprag eval --ray``: :func:`dynaprag.eval.experiment.run` on Ray workers; the run's summary."""
    return evaluate_on_ray([cell(run_cfg, pipe_cfg, out, adopt=adopt)], config, progress=progress, log=log)[0]


def evaluate_on_ray(cells: Sequence[Cell], config: RayEvalConfig, *, progress: bool = True,
                    log: Callable[[str], None] | None = None,
                    on_event: Callable[[dict], None] | None = None) -> list[dict]:
    """Answer every question of ``cells`` not yet recorded, on Ray; each cell's summary, in order.

    Ray starts (or is joined) only when a question is left to answer; a cluster this call
    started is stopped when it returns. ``log`` receives one line per lost worker, per
    restarted worker and per question that raised (default: stderr, above the bar).
    ``on_event`` receives the same as dicts (``event``: ``ready``, ``dispatched``, ``lost``,
    ``error``, ``record``), with the workers' PIDs: what a test or a dashboard needs.
    """
    from dynaprag.eval.experiment import is_complete

    if all(is_complete(c.out, c.examples) for c in cells):
        with ExitStack() as stack:
            runs = [stack.enter_context(open_run(c.out, c.examples, config=_kept_config(c), adopt=c.adopt))
                    for c in cells]
            return [_final_summary(run) for run in runs]
    _build_indexes(cells, progress)
    with ray_session(config.cluster()) as ray:
        workers = config.size(ray.cluster_resources())
        recorded = {"address": config.address or "local", "workers": workers,
                    "threads_per_worker": config.threads_per_worker, "gpus_per_worker": config.gpus_per_worker,
                    "shard_size": config.shard_size}
        with ExitStack() as stack:
            runs = [stack.enter_context(open_run(c.out, c.examples, config={**c.config, "ray": recorded},
                                                 adopt=c.adopt)) for c in cells]
            driver = _Driver(ray, cells, runs, config, workers, progress=progress, log=log or _stderr,
                             on_event=on_event or (lambda event: None))
            driver.run()
            return [_final_summary(run, driver.throughput(i)) for i, run in enumerate(runs)]


def _kept_config(c: Cell) -> dict:
    """``c``'s config with the ``ray`` entry its folder already records (a finished run keeps how it ran)."""
    try:
        old = json.loads((c.out / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return c.config
    return {**c.config, "ray": old["ray"]} if isinstance(old, dict) and "ray" in old else c.config


def _final_summary(run: OpenRun, throughput: dict | None = None) -> dict:
    summary = {**run.summary(), **(throughput or {})}
    run.write_summary(summary)
    return summary


def _build_indexes(cells: Sequence[Cell], progress: bool) -> None:
    """Build each retrieval index once here, before the workers open it (they would take turns building it)."""
    from dynaprag.config import to_dict
    from dynaprag.eval.experiment import is_complete, library_progress
    from dynaprag.retrieval import build_retriever

    seen = set()
    for c in cells:
        key = json.dumps(to_dict(c.pipe_cfg.retrieval), sort_keys=True, default=str)
        if key not in seen and not is_complete(c.out, c.examples):
            seen.add(key)
            with library_progress(progress):
                build_retriever(c.pipe_cfg.retrieval, progress=progress)


def _stderr(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)


class _Worker:
    """The driver's view of one actor: its handle, number, and the process it runs in."""

    def __init__(self, number: int, actor: Any):
        self.number, self.actor, self.pid, self.node = number, actor, None, None

    def __str__(self) -> str:
        return f"worker {self.number} (pid {self.pid} on {self.node})"


class _Driver:
    """Hands shards to free workers, writes what comes back in question order, survives lost workers."""

    def __init__(self, ray: Any, cells: Sequence[Cell], runs: Sequence[OpenRun], config: RayEvalConfig,
                 workers: int, *, progress: bool, log: Callable[[str], None], on_event: Callable[[dict], None]):
        self.ray, self.cells, self.runs, self.config = ray, cells, runs, config
        self.log, self.emit = log, on_event
        self.orders = [InOrder() for _ in cells]
        self.started: dict[int, float] = {}
        self.written = [0] * len(cells)
        self.last: dict[int, float] = {}
        self.queue = ShardQueue(cut_shards([len(r.todo) for r in runs], self._shard_size()), config.shard_attempts)
        self.workers = workers
        self._configs: list[tuple] | None = None
        self.bar = _bar(cells, runs, progress)

    def _shard_size(self) -> int:
        if self.config.shard_size:
            return self.config.shard_size
        return 2 * max(c.batch_size for c in self.cells)

    def run(self) -> None:
        from dynaprag.eval.ray_worker import EvalWorker

        pool: list[_Worker] = []
        try:
            if not len(self.queue):
                return
            actor_cls = self.ray.remote(EvalWorker).options(
                num_cpus=self.config.threads_per_worker, num_gpus=self.config.gpus_per_worker,
                max_restarts=self.config.max_restarts, max_task_retries=0)
            count = min(self.workers, len(self.queue))
            pool += [_Worker(i + 1, actor_cls.remote(self.config.threads_per_worker, self.config.gpus_per_worker))
                     for i in range(count)]
            self._drive(pool)
        finally:
            for worker in pool:
                self.ray.kill(worker.actor)
            self.bar.close()

    def _drive(self, pool: list[_Worker]) -> None:
        from ray.exceptions import RayActorError, RayError, RayTaskError

        probes = {self._probe(w): w for w in pool}  # workers not (yet, or again) known to answer
        inflight: dict[Any, tuple[_Worker, Shard]] = {}
        idle: list[_Worker] = []
        while len(self.queue) or inflight:
            while idle and len(self.queue):
                self._dispatch(idle.pop(0), inflight)
            if not inflight and not probes:
                raise RunError("every Ray worker died and none could be restarted; the records so far are kept: "
                               "rerun the same command to resume")
            ready = self.ray.wait(list(inflight) + list(probes), num_returns=1, timeout=_PATIENCE_S)[0]
            if not ready:
                self._waiting(pool, probes)
                continue
            ref = ready[0]
            if ref in probes:
                worker = probes.pop(ref)
                try:
                    self._ready(worker, self.ray.get(ref))
                    idle.append(worker)
                except RayActorError as exc:
                    self.log(f"{worker} is gone for good ({_first_line(exc)})")
                except RayTaskError as exc:
                    raise RunError(f"a Ray worker could not load the runs' model or index: {_cause(exc)}") from None
                except RayError as exc:  # e.g. an actor no node can host
                    raise RunError(f"a Ray worker could not start: {_first_line(exc)}") from None
                continue
            worker, shard = inflight.pop(ref)
            try:
                answered, peak = self.ray.get(ref)
            except RayTaskError as exc:
                raise RunError(f"{self.cells[shard.cell].label}: {worker} failed: {_cause(exc)}") from None
            except RayError as exc:  # the actor died (RayActorError) or its answer was lost with a node
                self._lost(worker, shard, exc)
                probes[self._probe(worker)] = worker
                continue
            idle.append(worker)
            while idle and len(self.queue):  # the next shard first, then the writing
                self._dispatch(idle.pop(0), inflight)
            for position, result, seconds in answered:
                self._receive(shard.cell, position, result, seconds, peak, worker)

    def _waiting(self, pool: list[_Worker], probes: dict) -> None:
        """Say so when workers take long to start (a busy cluster, a model that loads slowly)."""
        starting = [w for w in probes.values() if w.pid is None]
        if starting:
            self.log(f"{len(starting)} of {len(pool)} Ray workers not started after {_PATIENCE_S} s or more "
                     f"(the cluster may lack free CPUs/GPUs for them: `ray status`); still waiting")

    def _probe(self, worker: _Worker) -> Any:
        """A call that answers once the actor is alive (waiting through a restart) and has loaded
        the pipelines of the runs with questions left."""
        if self._configs is None:
            seen: dict[str, tuple] = {}
            for c, run in zip(self.cells, self.runs):
                if run.todo:
                    key = json.dumps([c.config["pipeline"], c.config["resolved_dtype"]], sort_keys=True, default=str)
                    seen.setdefault(key, (c.pipe_cfg, c.config["resolved_dtype"]))
            self._configs = list(seen.values())
        return worker.actor.prepare.options(max_task_retries=-1).remote(self._configs)

    def _ready(self, worker: _Worker, where: dict) -> None:
        restarted = worker.pid is not None
        worker.pid, worker.node = where["pid"], where["node"]
        if restarted:
            self.log(f"{worker} restarted and takes shards again")
        self.emit({"event": "ready", "worker": worker.number, "pid": worker.pid, "node": worker.node})

    def _dispatch(self, worker: _Worker, inflight: dict) -> None:
        shard = self.queue.take()
        c, run = self.cells[shard.cell], self.runs[shard.cell]
        items = [(p, run.todo[p].question) for p in shard.positions]
        ref = worker.actor.answer.remote(c.pipe_cfg, c.config["resolved_dtype"], items, c.batch_size,
                                         c.config.get("extraction", "forced") == "forced")
        inflight[ref] = (worker, shard)
        self.started.setdefault(shard.cell, time.perf_counter())
        self.emit({"event": "dispatched", "worker": worker.number, "pid": worker.pid, "cell": c.label,
                   "ids": [run.todo[p].id for p in shard.positions], "attempts": shard.attempts})

    def _lost(self, worker: _Worker, shard: Shard, exc: BaseException) -> None:
        c, run = self.cells[shard.cell], self.runs[shard.cell]
        ids = [run.todo[p].id for p in shard.positions]
        given_up = self.queue.lost(shard)
        fate = "recorded as an error" if given_up else "back in the queue for the next free worker"
        self.log(f"{worker} died answering {c.label} {_span(ids)}: {fate} ({_first_line(exc)})")
        self.emit({"event": "lost", "worker": worker.number, "pid": worker.pid, "cell": c.label, "ids": ids,
                   "given_up": bool(given_up)})
        for lone in given_up:
            error = "WorkerLost: the worker answering this question died on every try"
            self._receive(lone.cell, lone.positions[0], error, 0.0, 0.0, worker)

    def _receive(self, index: int, position: int, result: Any, seconds: float, peak: float, worker: _Worker) -> None:
        """Hold an answer until every earlier question of its run is written; write the ones now due."""
        c, run = self.cells[index], self.runs[index]
        if isinstance(result, str):
            self.log(f"{c.label}: question {run.todo[position].id!r} raised on {worker}: {result} "
                     "(recorded as an error)")
            self.emit({"event": "error", "cell": c.label, "id": run.todo[position].id, "error": result})
        yes_no = c.config.get("yes_no_task", False)
        for pos, (res, secs, peak_mb) in self.orders[index].put(position, (result, seconds, peak)):
            example = run.todo[pos]
            if isinstance(res, str):
                record = make_error_record(example, res, yes_no_task=yes_no)
            else:
                record = make_record(example, res, secs, yes_no_task=yes_no)
                record["peak_rss_mb"] = peak_mb  # the worker's, not the driver's
            record["batch_size"] = c.batch_size
            run.append(record)
            self.written[index] += 1
            self.last[index] = time.perf_counter()
            run.write_summary({**run.summary(), **self.throughput(index)})
            self.emit({"event": "record", "cell": c.label, "id": example.id})
            self.bar.set_postfix_str(_postfix(self.cells, self.runs), refresh=False)
            self.bar.update(1)

    def throughput(self, index: int) -> dict:
        """``questions_per_hour`` of run ``index`` in this invocation: from its first shard to its last record."""
        if not self.written[index] or index not in self.started:
            return {}
        elapsed = self.last[index] - self.started[index]
        return {"questions_per_hour": self.written[index] / elapsed * 3600 if elapsed > 0 else None,
                "questions_per_hour_over": self.written[index]}


def _bar(cells: Sequence[Cell], runs: Sequence[OpenRun], progress: bool):
    """One bar over every run: questions recorded of all questions, the unfinished runs in its postfix."""
    from tqdm.auto import tqdm

    total = sum(len(c.examples) for c in cells)
    done = total - sum(len(r.todo) for r in runs)
    bar = tqdm(total=total, initial=done, disable=not progress, unit="q", dynamic_ncols=True,
               desc=cells[0].label if len(cells) == 1 else f"{len(cells)} runs")
    bar.set_postfix_str(_postfix(cells, runs), refresh=False)
    return bar


def _postfix(cells: Sequence[Cell], runs: Sequence[OpenRun]) -> str:
    """``hotpotqa dragin 12/50 · ...`` for the runs not finished yet (all of them for one run)."""
    parts = [f"{c.label} {len(r.records)}/{len(c.examples)}" for c, r in zip(cells, runs)
             if len(cells) == 1 or len(r.records) < len(c.examples)]
    return " · ".join(parts)


def _span(ids: Sequence[str]) -> str:
    return f"question {ids[0]!r}" if len(ids) == 1 else f"questions {ids[0]!r}..{ids[-1]!r} ({len(ids)})"


def _cause(exc: BaseException) -> str:
    """The first line of what a remote call raised (a ``RayTaskError`` carries the worker's exception)."""
    cause = getattr(exc, "cause", None)
    return _first_line(cause if isinstance(cause, BaseException) else exc)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."

