"""One worker thread that runs model jobs one at a time from a bounded queue.

Why: generation is CPU-bound and the model (its KV caches, the attention tap) is not
thread-safe, so requests must not run concurrently; and memory must stay bounded however many
clients connect, so the waiting line has a fixed length and a full line refuses at once (the
HTTP layer answers 503 with ``Retry-After``) instead of piling up work.

A job may be cancelled while it waits (it is then skipped) or while it runs: its event
callback raises :class:`Cancelled` at the next token, which unwinds the pipeline and frees
the worker for the next request (used when a streaming client disconnects).

>>> w = Worker(max_queue=2).start()
>>> w.submit(lambda job: 6 * 7).future.result()
42
>>> w.stop()
"""
from __future__ import annotations

import concurrent.futures
import math
import queue
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
class Job:
    """A unit of work: ``fn(job)`` runs on the worker thread; its result lands in ``future``."""

    fn: Callable[["Job"], Any]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None

    def cancel(self) -> None:
        self.cancelled.set()

    def check(self) -> None:
        """Call from inside ``fn`` (e.g. per token) to stop early when cancelled."""
        if self.cancelled.is_set():
            raise Cancelled("the client went away")


class Worker:
    """A single daemon thread consuming a ``queue.Queue(maxsize=max_queue)`` of :class:`Job`.

    At most ``max_queue`` jobs wait while one runs, so at most ``max_queue + 1`` requests hold
    memory at any time.
    """

    def __init__(self, max_queue: int = 8, name: str = "dynaprag-worker"):
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.max_queue = max_queue
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._lock = threading.Lock()
        self._running: Job | None = None
        self._mean_seconds = 5.0  # prior for Retry-After until jobs have been timed
        self.completed = 0
        self.refused = 0
        self.failed = 0

    def start(self) -> "Worker":
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the thread to finish the running job and exit; waiting jobs are cancelled."""
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.future.cancel()
        running = self._running
        if running is not None:
            running.cancel()
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    @property
    def pending(self) -> int:
        """Jobs waiting (not counting the running one)."""
        return self._queue.qsize()

    @property
    def busy(self) -> bool:
        return self._running is not None

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the mean job time times the jobs ahead."""
        return max(1, math.ceil(self._mean_seconds * (self.pending + 1)))

    def submit(self, fn: Callable[[Job], Any]) -> Job:
        """Queue ``fn`` or raise :class:`QueueFull` at once (never blocks)."""
        job = Job(fn)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self.refused += 1
            raise QueueFull(self.pending, self.retry_after()) from None
        return job

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.cancelled.is_set() or not job.future.set_running_or_notify_cancel():
                continue
            self._running = job
            job.started = time.monotonic()
            try:
                result = job.fn(job)
            except BaseException as exc:  # noqa: BLE001 - every failure goes back to its caller
                with self._lock:
                    self.failed += 1
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            finally:
                seconds = time.monotonic() - job.started
                with self._lock:
                    self.completed += 1
                    self._mean_seconds = 0.7 * self._mean_seconds + 0.3 * seconds
                self._running = None

    def stats(self) -> dict[str, Any]:
        return {"pending": self.pending, "max_queue": self.max_queue, "busy": self.busy,
                "completed": self.completed, "refused": self.refused, "failed": self.failed,
                "mean_job_seconds": round(self._mean_seconds, 3)}
