"""How long until the waiting line drains: the ``Retry-After`` a refused client is told.

Issue 27 measured every 503 saying 154 s while the line drained in 23.6 s: the old estimate
multiplied the waiting *runs* by a mean *batch* duration, and a batch that newcomers keep joining
runs long while finishing many jobs. What a refused client needs is the drain time of the line in
front of it, so :class:`DrainRate` measures the worker's throughput directly -- jobs finished per
second of busy time over the recent completions -- and divides the jobs in the line (waiting and
running) by it. Busy time, not wall time, so idle minutes between bursts do not read as a slow
worker. Until two jobs have finished there is no rate, and :class:`ServiceTime` (a mean per run)
answers. Both are capped (:class:`DrainRate` at 30 minutes: on a loaded CPU server a burst
drained well past a 5-minute cap, which then sent clients back too early).
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field


@dataclass
class DrainRate:
    """Jobs finished per busy second over the last ``window`` completions, and the drain time it implies.

    The worker calls :meth:`busy` when a run starts and :meth:`idle` when it ends, and
    :meth:`finished` as each job (alone or in a batch) finishes::

        rate = (n - 1) / (busy time between the first and the last of the last n completions)
        Retry-After = clamp(ceil(jobs in line / rate), floor, cap)

    >>> d = DrainRate()
    >>> d.busy(0.0); d.finished(1.0); d.finished(2.0); d.finished(3.0)
    >>> d.rate()
    1.0
    >>> d.retry_after(jobs=10)
    10
    >>> d.idle(3.0); d.busy(100.0); d.finished(101.0)   # the idle gap is not counted
    >>> d.rate()
    1.0
    """

    window: int = 32
    floor_seconds: int = 1
    cap_seconds: int = 1800
    _marks: collections.deque = field(default_factory=collections.deque, init=False, repr=False)
    _busy_before: float = field(default=0.0, init=False)
    _since: float | None = field(default=None, init=False)

    def busy(self, now: float) -> None:
        if self._since is None:
            self._since = now

    def idle(self, now: float) -> None:
        if self._since is not None:
            self._busy_before += now - self._since
            self._since = None

    def _clock(self, now: float) -> float:
        return self._busy_before + (0.0 if self._since is None else now - self._since)

    def finished(self, now: float) -> None:
        """One job finished at ``now`` (monotonic seconds)."""
        self._marks.append(self._clock(now))
        while len(self._marks) > self.window:
            self._marks.popleft()

    def rate(self) -> float | None:
        """Jobs per busy second, or ``None`` before two completions (or if they were simultaneous)."""
        if len(self._marks) < 2 or self._marks[-1] <= self._marks[0]:
            return None
        return (len(self._marks) - 1) / (self._marks[-1] - self._marks[0])

    def retry_after(self, jobs: int) -> int | None:
        """Whole seconds until ``jobs`` more jobs have finished at the measured rate (None: no rate yet)."""
        rate = self.rate()
        if rate is None:
            return None
        return int(min(self.cap_seconds, max(self.floor_seconds, math.ceil(jobs / rate))))


@dataclass
class ServiceTime:
    """How long a job holds the worker, learnt from the jobs it ran; ``Retry-After`` before any throughput is known.

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
    ``m − r``; none if the worker is idle) and ``pending`` the jobs waiting. With batching a
    "job" is one run of the worker (a batch or a lone job): ``m`` is measured per batch and
    ``pending`` counts the batches the waiting line will form (:meth:`Worker.retry_after`). The floor (1 s)
    keeps the header meaningful; the cap (300 s) bounds what one mismeasured job can claim.

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
    cap_seconds: int = 300
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
