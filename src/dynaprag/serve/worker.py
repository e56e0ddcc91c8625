"""One worker thread that runs model jobs one at a time from a bounded waiting line.

Why: generation is CPU-bound and the model (its KV caches, the attention tap) is not
thread-safe, so requests must not run concurrently; and memory must stay bounded however many
clients connect, so the waiting line has a fixed length and a full line refuses at once (the
HTTP layer answers 503 with ``Retry-After``) instead of piling up work.

A job is cancelled when its client goes away (:meth:`Job.cancel`, called by the HTTP layer
for streaming and plain requests alike). A waiting job then leaves the line at once, so it
never runs and its slot is free for the next request; a running job's check raises
:class:`Cancelled` at the next token, which unwinds the pipeline and frees the worker.

``Retry-After`` comes from measured service times (:class:`ServiceTime`), not a constant.

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
from typing import Any, Callable


class QueueFull(RuntimeError):
    """The waiting line is full; ``retry_after`` is a hint in whole seconds."""

    def __init__(self, pending: int, retry_after: int):
        super().__init__(f"the server is busy ({pending} requests waiting); retry in about {retry_after} s")
        self.pending = pending
        self.retry_after = retry_after


class Cancelled(Exception):
    """Raised inside a running job whose client has gone away."""


@dataclass
class ServiceTime:
    """How long a job holds the worker, learnt from the jobs it ran; the ``Retry-After`` estimate.

    The mean service time ``m`` is an exponentially weighted mean of measured job durations,
    ``m ← w·d + (1 − w)·m`` with ``weight`` w = 0.5, so a job's influence halves with each
    later job: one slow request (the first one, which warms caches, or an unusually long
    answer) stops mattering after a few, which is what made the old estimate say 116 s for a
    queue that drained in ~10 s. The first measurement replaces ``prior_seconds``, which is
    used only before any job has finished.

    A refused client is told how long until the line now in front of it has drained, with
    one worker::

        Retry-After = clamp(ceil(max(m − r, 0) + pending · m), floor, cap)

    where ``r`` is how long the running job has run so far (its expected remaining time is
    ``m − r``; none if the worker is idle) and ``pending`` the jobs waiting. The floor (1 s)
    keeps the header meaningful; the cap (600 s) bounds what one mismeasured job can claim.

    >>> est = ServiceTime(prior_seconds=2.0)
    >>> est.retry_after(pending=2, running_for=None)
    4
    >>> est.record(3.0); est.record(1.0); est.mean_seconds
    2.0
    >>> est.retry_after(pending=2, running_for=0.5)
    6
    """

    prior_seconds: float = 2.0
    weight: float = 0.5
    floor_seconds: int = 1
    cap_seconds: int = 600
    mean_seconds: float = field(init=False)
    measured: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.mean_seconds = self.prior_seconds

    def record(self, seconds: float) -> None:
        """Add one job's duration (a job that ran until it returned or failed)."""
        if self.measured == 0:
            self.mean_seconds = seconds
        else:
            self.mean_seconds = self.weight * seconds + (1 - self.weight) * self.mean_seconds
        self.measured += 1

    def retry_after(self, pending: int, running_for: float | None) -> int:
        """Whole seconds until ``pending`` waiting jobs and the running one (if any) are done."""
        remaining = 0.0 if running_for is None else max(self.mean_seconds - running_for, 0.0)
        seconds = math.ceil(remaining + pending * self.mean_seconds)
        return int(min(self.cap_seconds, max(self.floor_seconds, seconds)))


@dataclass
class Job:
    """A unit of work: ``fn(job)`` runs on the worker thread; its result lands in ``future``."""

    fn: Callable[["Job"], Any]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    on_cancel: Callable[["Job"], None] | None = field(default=None, repr=False)

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


class Worker:
    """A single daemon thread consuming a bounded line of :class:`Job` (at most ``max_queue``).

    At most ``max_queue`` jobs wait while one runs, so at most ``max_queue + 1`` requests hold
    memory at any time. Counters (see :meth:`stats`): ``completed`` jobs ran to their end or
    raised; ``failed`` of them raised, including ``cancelled`` ones (stopped at a token because
    their client left); ``dropped`` jobs left the line before starting because their client
    left, and never ran; ``refused`` submissions found the line full.
    """

    def __init__(self, max_queue: int = 8, name: str = "dynaprag-worker",
                 service_time: ServiceTime | None = None):
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.max_queue = max_queue
        self.service_time = service_time or ServiceTime()
        self._line: collections.deque[Job] = collections.deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._running: Job | None = None
        self.completed = 0
        self.refused = 0
        self.failed = 0
        self.cancelled = 0
        self.dropped = 0

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
            running = self._running
            self._changed.notify_all()
        for job in waiting:
            job.future.cancel()
        if running is not None:
            running.cancel()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        """Jobs waiting (not counting the running one)."""
        return len(self._line)

    @property
    def busy(self) -> bool:
        return self._running is not None

    def retry_after(self) -> int:
        """Seconds until the jobs now waiting and running are likely done (:class:`ServiceTime`)."""
        with self._changed:
            running = self._running
            running_for = None if running is None or running.started is None else time.monotonic() - running.started
            return self.service_time.retry_after(len(self._line), running_for)

    def submit(self, fn: Callable[[Job], Any]) -> Job:
        """Queue ``fn`` or raise :class:`QueueFull` at once (never blocks)."""
        job = Job(fn, on_cancel=self._withdraw)
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

    def _next(self) -> Job | None:
        """The next job to run (marked running), or ``None`` when the worker stops."""
        with self._changed:
            while True:
                while not self._line and not self._stopping:
                    self._changed.wait()
                if self._stopping:
                    return None
                job = self._line.popleft()
                if job.future.set_running_or_notify_cancel():
                    self._running = job
                    job.started = time.monotonic()
                    return job
                self.dropped += 1  # its waiter cancelled the future without Job.cancel

    def _run(self) -> None:
        while (job := self._next()) is not None:
            error: BaseException | None = None
            try:
                result = job.fn(job)
            except BaseException as exc:  # noqa: BLE001 - every failure goes back to its caller
                error = exc
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            seconds = time.monotonic() - job.started
            with self._changed:
                self.completed += 1
                self.failed += error is not None
                if isinstance(error, Cancelled):
                    self.cancelled += 1
                else:  # a job stopped early says nothing about how long jobs take
                    self.service_time.record(seconds)
                self._running = None

    def stats(self) -> dict[str, Any]:
        with self._changed:
            return {"pending": self.pending, "max_queue": self.max_queue, "busy": self.busy,
                    "completed": self.completed, "refused": self.refused, "failed": self.failed,
                    "cancelled": self.cancelled, "dropped": self.dropped,
                    "mean_job_seconds": round(self.service_time.mean_seconds, 3),
                    "measured_jobs": self.service_time.measured, "retry_after_seconds": self.retry_after()}
