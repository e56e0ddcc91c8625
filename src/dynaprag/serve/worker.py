"""One worker thread that runs model jobs from a bounded waiting line, alone or in batches.

Why: generation is CPU-bound and the model (its KV caches, the attention tap) is not
thread-safe, so only this thread touches it; and memory must stay bounded however many
clients connect, so the waiting line has a fixed length and a full line refuses at once (the
HTTP layer answers 503 with ``Retry-After``) instead of piling up work.

**Batches.** A job submitted with a ``batch_key`` (:meth:`Worker.submit_batched`; the server
keys answers by method, knobs and token budget) runs together with the other waiting jobs of
the same key: when such a job reaches the head of the line, the worker takes it and up to
``batch_size - 1`` more waiting jobs with its key (from anywhere in the line; the head is
always served first, so nothing starves) and hands them to ``run_batch``, which yields
``(index, result or exception)`` as each finishes (the server decodes them through one
:class:`~dynaprag.dynamic.batch.BatchLoop`). Each job's result or error is its own. A job
without a key (``submit``) runs alone.

**Joining a running batch** (continuous batching). A job that arrives while a batch of its key
runs need not wait for the whole batch: when a slot frees up, ``run_batch`` calls
:meth:`Worker.take_waiting`, which moves waiting jobs of the key into the running batch by the
same rule (only while the head of the line has the key, so a job of another key at the head
stops the batch from growing and runs as soon as it drains: nothing starves). A joined job
leaves the waiting line, so it frees its place under ``max_queue`` like any job that starts.

A job is cancelled when its client goes away (:meth:`Job.cancel`, called by the HTTP layer
for streaming and plain requests alike). A waiting job then leaves the line at once, so it
never runs and its slot is free for the next request; a running job's check raises
:class:`Cancelled` at the next token, which unwinds the pipeline and frees the worker.

``Retry-After`` comes from the measured throughput (:class:`~dynaprag.serve.drain.DrainRate`),
not a constant. **Memory.** With a ``memory_budget`` (bytes), jobs carry an estimated ``cost``;
a job whose cost alone is over the budget is refused before it queues (the HTTP layer answers
413), and a job joins a running batch only while the running jobs' costs plus its own fit the
budget (otherwise it waits for its turn to run first).

>>> w = Worker(max_queue=2).start()
>>> w.submit(lambda job: 6 * 7).future.result()
42
>>> w.stop()
"""
from __future__ import annotations

import collections
import concurrent.futures
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable

from dynaprag.serve.drain import DrainRate, ServiceTime

__all__ = ["Cancelled", "DrainRate", "Job", "OverBudget", "QueueFull", "ServiceTime", "Worker"]


class QueueFull(RuntimeError):
    """The waiting line is full; ``retry_after`` is a hint in whole seconds."""

    def __init__(self, pending: int, retry_after: int):
        super().__init__(f"the server is busy ({pending} requests waiting); retry in about {retry_after} s")
        self.pending = pending
        self.retry_after = retry_after


class Cancelled(Exception):
    """Raised inside a running job whose client has gone away."""


class OverBudget(ValueError):
    """A job whose estimated memory alone is over the worker's budget: it could never run."""

    def __init__(self, cost: int, budget: int):
        super().__init__(f"this request needs an estimated {cost / 2**20:.0f} MiB of working memory; the server's "
                         f"budget is {budget / 2**20:.0f} MiB (--memory-budget-mb): use a shorter question, fewer "
                         "samples or a smaller max_tokens")
        self.cost, self.budget = cost, budget


@dataclass
class Job:
    """A unit of work: ``fn(job)`` runs on the worker thread; its result lands in ``future``.

    A batched job has no ``fn`` but a ``batch_key`` and a ``payload`` that the worker's
    ``run_batch`` reads (the server's: question, knobs, event sink).
    """

    fn: Callable[["Job"], Any] | None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    on_cancel: Callable[["Job"], None] | None = field(default=None, repr=False)
    batch_key: Hashable | None = None
    payload: Any = None
    cost: int = 0  # estimated bytes it holds while it runs (the worker's memory budget admits by it)

    def cancel(self) -> None:
        """The client went away: leave the line if waiting, stop at the next :meth:`check` if running.

        Safe to call from any thread, any number of times, also after the job finished.
        """
        if self.cancelled.is_set():
            return
        self.cancelled.set()
        if self.on_cancel is not None:
            self.on_cancel(self)

    def check(self) -> None:
        """Call from inside ``fn`` (e.g. per token) to stop early when cancelled."""
        if self.cancelled.is_set():
            raise Cancelled("the client went away")


#: ``run_batch(key, jobs)``: ``(index into jobs, result or exception)`` as each job finishes
RunBatch = Callable[[Hashable, list[Job]], Iterable[tuple[int, Any]]]


class Worker:
    """A single daemon thread consuming a bounded line of :class:`Job` (at most ``max_queue``).

    At most ``max_queue`` jobs wait while one job or one batch runs, the batch decoding at most
    ``batch_size`` of its jobs at once (finished ones leave, waiting ones of its key join), so at
    most ``max_queue + batch_size`` requests hold memory at any time. Counters (see
    :meth:`stats`): ``completed`` jobs ran to their end or raised; ``failed`` of them raised,
    including ``cancelled`` ones (stopped at a token because their client left); ``dropped``
    jobs left the line before starting because their client left, and never ran; ``refused``
    submissions found the line full; ``batches`` runs of ``run_batch`` and the
    ``largest_batch`` number of jobs one of them answered (jobs that joined included, so it
    may exceed ``batch_size``); ``joined`` jobs moved from the line into a running batch
    (:meth:`take_waiting`).
    """

    def __init__(self, max_queue: int = 8, name: str = "dynaprag-worker",
                 service_time: ServiceTime | None = None, batch_size: int = 1, run_batch: RunBatch | None = None,
                 memory_budget: int | None = None):
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.run_batch = run_batch
        self.service_time = service_time or ServiceTime()
        self.drain = DrainRate()
        self.memory_budget = memory_budget
        self._line: collections.deque[Job] = collections.deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._running: list[Job] = []
        self.completed = 0
        self.refused = 0
        self.failed = 0
        self.cancelled = 0
        self.dropped = 0
        self.batches = 0
        self.largest_batch = 0
        self.joined = 0

    def start(self) -> "Worker":
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the waiting jobs and the running one, then let the thread exit."""
        with self._changed:
            self._stopping = True
            waiting = list(self._line)
            self._line.clear()
            running = list(self._running)
            self._changed.notify_all()
        for job in waiting:
            job.future.cancel()
        for job in running:
            job.cancel()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        """Jobs waiting (not counting the running one)."""
        return len(self._line)

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def _pending_runs(self) -> int:
        """How many runs (batches or lone jobs) the waiting line will take to drain."""
        keyed = collections.Counter(job.batch_key for job in self._line if job.batch_key is not None)
        lone = sum(job.batch_key is None for job in self._line)
        return lone + sum(math.ceil(n / self.batch_size) for n in keyed.values())

    def retry_after(self) -> int:
        """Seconds until the jobs now waiting and running are likely done (:class:`ServiceTime`)."""
        with self._changed:
            measured = self.drain.retry_after(len(self._line) + len(self._running))
            if measured is not None:
                return measured
            started = self._running[0].started if self._running else None
            running_for = None if started is None else time.monotonic() - started
            return self.service_time.retry_after(self._pending_runs(), running_for)

    def submit(self, fn: Callable[[Job], Any]) -> Job:
        """Queue ``fn`` (run alone) or raise :class:`QueueFull` at once (never blocks)."""
        return self._enqueue(Job(fn, on_cancel=self._withdraw))

    def submit_batched(self, key: Hashable, payload: Any, cost: int = 0) -> Job:
        """Queue a job that ``run_batch`` runs with the other waiting jobs of ``key``; or raise :class:`QueueFull`.

        ``cost``: the bytes it is estimated to hold while it runs; over the memory budget alone
        it raises :class:`OverBudget` (it could never run).
        """
        if self.run_batch is None:
            raise RuntimeError("this worker has no run_batch")
        if self.memory_budget is not None and cost > self.memory_budget:
            raise OverBudget(cost, self.memory_budget)
        return self._enqueue(Job(None, on_cancel=self._withdraw, batch_key=key, payload=payload, cost=cost))

    def _enqueue(self, job: Job) -> Job:
        with self._changed:
            if len(self._line) >= self.max_queue or self._stopping:
                self.refused += 1
                raise QueueFull(len(self._line), self.retry_after())
            self._line.append(job)
            self._changed.notify()
        return job

    def _withdraw(self, job: Job) -> None:
        """A waiting job's client left: take it out of the line so it never runs."""
        with self._changed:
            try:
                self._line.remove(job)
            except ValueError:
                return  # already running (its check stops it) or finished
            self.dropped += 1
        job.future.cancel()

    def _next(self) -> list[Job] | None:
        """The next job, or batch of jobs of one key, to run (marked running); ``None`` when the worker stops."""
        with self._changed:
            while True:
                while not self._line and not self._stopping:
                    self._changed.wait()
                if self._stopping:
                    return None
                head = self._line.popleft()
                if not head.future.set_running_or_notify_cancel():
                    self.dropped += 1  # its waiter cancelled the future without Job.cancel
                    continue
                group = [head]
                self._running = group  # the budget counts the head while more are taken
                if head.batch_key is not None:
                    group += self._take(head.batch_key, self.batch_size - 1)
                started = time.monotonic()
                for job in group:
                    job.started = started
                self._running = group
                self.drain.busy(started)
                return group

    def _take(self, key: Hashable, n: int) -> list[Job]:
        """Up to ``n`` waiting jobs of ``key`` from anywhere in the line, oldest first, out of the line
        and marked running (jobs whose future was cancelled are dropped). Hold ``_changed``."""
        taken: list[Job] = []
        held = sum(j.cost for j in self._running if not j.future.done())
        for job in [j for j in self._line if j.batch_key == key]:
            if len(taken) >= n:
                break
            if self.memory_budget is not None and held + job.cost > self.memory_budget:
                break  # it waits: the running jobs and it would not fit the budget together
            held += job.cost
            self._line.remove(job)
            if job.future.set_running_or_notify_cancel():
                taken.append(job)
            else:
                self.dropped += 1
        return taken

    def take_waiting(self, key: Hashable, n: int) -> list[Job]:
        """Move up to ``n`` waiting jobs of ``key`` into the running batch of ``key`` and return them.

        Called by ``run_batch`` (on the worker thread) when its batch has free slots. The jobs
        are appended to the list ``run_batch`` received, so their indices continue it: the
        first one returned is ``jobs[len(jobs) before the call]``, and ``run_batch`` yields
        their results under those indices. Jobs join only while the head of the line has
        ``key``: a job of another key at the head is not overtaken (the batch stops growing,
        runs out, and that job goes next); none join while the worker stops.
        Thread-safe; cheap (one pass over the waiting line under the lock).
        """
        with self._changed:
            running = self._running
            if not running or running[0].batch_key != key:
                raise RuntimeError(f"no batch of key {key!r} is running to take waiting jobs")
            if self._stopping or n < 1 or not self._line or self._line[0].batch_key != key:
                return []
            taken = self._take(key, n)
            started = time.monotonic()
            for job in taken:
                job.started = started
            running.extend(taken)
            self.joined += len(taken)
            return taken

    def _run(self) -> None:
        while (group := self._next()) is not None:
            if group[0].batch_key is None:
                errors = [self._run_alone(group[0])]
            else:
                errors = self._run_batch(group)
            seconds = time.monotonic() - group[0].started
            with self._changed:
                self.completed += len(group)
                self.failed += sum(e is not None for e in errors)
                stopped = sum(isinstance(e, Cancelled) for e in errors)
                self.cancelled += stopped
                if stopped < len(group):  # jobs stopped early say nothing about how long jobs take
                    self.service_time.record(seconds)
                if group[0].batch_key is not None:
                    self.batches += 1
                    self.largest_batch = max(self.largest_batch, len(group))
                self._running = []
                self.drain.idle(time.monotonic())

    def _finished(self, result: Any) -> None:
        """Count one finished job toward the throughput (a cancelled one says nothing about it)."""
        if not isinstance(result, Cancelled):
            with self._changed:
                self.drain.finished(time.monotonic())

    def _run_alone(self, job: Job) -> BaseException | None:
        try:
            result = job.fn(job)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to its caller
            self._finished(exc)
            job.future.set_exception(exc)
            return exc
        self._finished(result)
        job.future.set_result(result)
        return None

    def _run_batch(self, group: list[Job]) -> list[BaseException | None]:
        """Run ``group`` through ``run_batch``; each job's future gets its own result or error."""
        errors: dict[int, BaseException | None] = {}
        try:
            for index, result in self.run_batch(group[0].batch_key, group):
                self._finished(result)
                if isinstance(result, BaseException):
                    group[index].future.set_exception(result)
                    errors[index] = result
                else:
                    group[index].future.set_result(result)
                    errors[index] = None
        except BaseException as exc:  # noqa: BLE001 - the batch failed as a whole: every unanswered job gets it
            for index, job in enumerate(group):
                if index not in errors:
                    job.future.set_exception(exc)
                    errors[index] = exc
        for index, job in enumerate(group):
            if index not in errors:
                errors[index] = RuntimeError("the batch ended without answering this request")
                job.future.set_exception(errors[index])
        return [errors[i] for i in range(len(group))]

    def stats(self) -> dict[str, Any]:
        with self._changed:
            return {"pending": self.pending, "max_queue": self.max_queue, "busy": self.busy,
                    "running": len(self._running), "batch_size": self.batch_size,
                    "completed": self.completed, "refused": self.refused, "failed": self.failed,
                    "cancelled": self.cancelled, "dropped": self.dropped,
                    "batches": self.batches, "largest_batch": self.largest_batch, "joined": self.joined,
                    "mean_job_seconds": round(self.service_time.mean_seconds, 3),
                    "measured_jobs": self.service_time.measured, "retry_after_seconds": self.retry_after(),
                    "jobs_per_second": None if (rate := self.drain.rate()) is None else round(rate, 4),
                    "memory_budget_mb": None if self.memory_budget is None else self.memory_budget // 2**20,
                    "running_cost_mb": sum(j.cost for j in self._running if not j.future.done()) // 2**20}
