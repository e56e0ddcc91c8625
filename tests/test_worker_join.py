"""Worker.take_waiting with plain jobs (no model): waiting jobs of the running batch's key join it,
keep valid indices, leave the waiting line (freeing their place under ``max_queue``), and never
overtake a job of another key at the head of the line.
"""
from __future__ import annotations

import threading

import pytest

from dynaprag.serve.worker import QueueFull, Worker

TIMEOUT = 30


class Batches:
    """A ``run_batch`` that the test steps through: it holds each batch at ``proceed``, takes
    waiting jobs once, holds again at ``finish``, and answers every job with ``(key, payload)``."""

    def __init__(self, take: int):
        self.take = take
        self.worker: Worker | None = None
        self.started, self.proceed, self.taken, self.finish = (threading.Event() for _ in range(4))
        self.runs: list[list[str]] = []
        self.joined: list[list[str]] = []

    def __call__(self, key, jobs):
        self.started.set()
        assert self.proceed.wait(TIMEOUT)
        before = len(jobs)
        new = self.worker.take_waiting(key, self.take)
        assert jobs[before:] == new  # appended to the running batch: indices continue
        self.joined.append([job.payload for job in new])
        self.taken.set()
        assert self.finish.wait(TIMEOUT)
        self.runs.append([job.payload for job in jobs])
        for index, job in reversed(list(enumerate(jobs))):
            yield index, (key, job.payload)


def started_worker(batches: Batches, max_queue: int) -> Worker:
    worker = Worker(max_queue=max_queue, batch_size=4, run_batch=batches)
    batches.worker = worker
    return worker.start()


def test_waiting_jobs_of_the_running_key_join_it_and_leave_the_line():
    batches = Batches(take=3)
    worker = started_worker(batches, max_queue=3)
    try:
        first = worker.submit_batched("A", "a0")
        assert batches.started.wait(TIMEOUT)
        waiting = {p: worker.submit_batched(k, p) for k, p in (("A", "a1"), ("B", "b0"), ("A", "a2"))}
        with pytest.raises(QueueFull):
            worker.submit_batched("A", "refused")
        batches.proceed.set()
        assert batches.taken.wait(TIMEOUT)
        assert worker.pending == 1  # a1 and a2 left the line for the running batch: b0 waits
        late = worker.submit_batched("A", "a3")  # their places are free again; a3 waits behind b0
        batches.finish.set()
        assert [first.future.result(TIMEOUT)] + [waiting[p].future.result(TIMEOUT) for p in ("a1", "a2")] == \
            [("A", "a0"), ("A", "a1"), ("A", "a2")]
        assert waiting["b0"].future.result(TIMEOUT) == ("B", "b0")
        assert late.future.result(TIMEOUT) == ("A", "a3")
        stats = worker.stats()
    finally:
        worker.stop()
    assert batches.runs == [["a0", "a1", "a2"], ["b0"], ["a3"]]
    assert batches.joined == [["a1", "a2"], [], []]
    assert stats["joined"] == 2 and stats["batches"] == 3 and stats["largest_batch"] == 3
    assert stats["completed"] == 5 and stats["failed"] == 0 and stats["refused"] == 1


def test_a_job_of_another_key_at_the_head_stops_the_batch_from_growing():
    """The head of the line is served next: a running batch does not take a1 past b0."""
    batches = Batches(take=3)
    worker = started_worker(batches, max_queue=4)
    try:
        worker.submit_batched("A", "a0")
        assert batches.started.wait(TIMEOUT)
        jobs = [worker.submit_batched(k, p) for k, p in (("B", "b0"), ("A", "a1"))]
        batches.proceed.set()
        batches.finish.set()
        assert [job.future.result(TIMEOUT) for job in jobs] == [("B", "b0"), ("A", "a1")]
        stats = worker.stats()
    finally:
        worker.stop()
    assert batches.runs == [["a0"], ["b0"], ["a1"]] and stats["joined"] == 0


def test_take_waiting_needs_a_running_batch_of_its_key():
    worker = Worker(max_queue=2, batch_size=4, run_batch=lambda key, jobs: iter(()))  # never started
    worker.submit_batched("A", "a0")
    with pytest.raises(RuntimeError, match="no batch"):
        worker.take_waiting("A", 2)
    assert worker.pending == 1 and worker.joined == 0
