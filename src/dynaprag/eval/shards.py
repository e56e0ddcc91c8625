"""Shards of a distributed evaluation and what happens to a shard whose worker is lost.

A shard is a run of consecutive questions still to do in one (dataset, method) run folder.
Small shards keep the tail short (the last shards of a run finish close together) and bound
what a lost worker takes with it; the queue hands them out in run order, so records reach
each run folder's question-order writer nearly in order and little is held in memory.

A shard whose worker died goes back to the front of the queue for the next free worker. A
shard lost ``attempts`` times (it may be what kills its workers: a question that runs a node
out of memory) is split into one-question shards with one try each, and a one-question shard
lost again is given up: the driver records that question as an error, so one poisonous
question costs at most ``attempts + 1`` worker restarts and never the whole run.

>>> queue = ShardQueue(cut_shards([5, 2], size=2), attempts=2)
>>> [s.positions for s in queue.shards]
[(0, 1), (2, 3), (4,), (0, 1)]
>>> queue.lost(queue.take()), queue.take()                 # a lost shard is tried again first
([], Shard(cell=0, positions=(0, 1), attempts=1))
>>> queue.lost(Shard(0, (0, 1), attempts=1)), [s.positions for s in queue.shards][:2]  # lost twice: split
([], [(0,), (1,)])
>>> queue.lost(queue.take())                                # a lone question lost again: given up
[Shard(cell=0, positions=(0,), attempts=2)]
"""
from __future__ import annotations

from collections import deque
from typing import NamedTuple, Sequence


class Shard(NamedTuple):
    """Questions ``positions`` (indices into the run's questions still to do) of run ``cell``."""

    cell: int
    positions: tuple[int, ...]
    attempts: int = 0  # how many workers were lost while answering it


def cut_shards(todo: Sequence[int], size: int) -> list[Shard]:
    """Shards of at most ``size`` questions over runs with ``todo[c]`` questions still to do, in run order."""
    size = max(1, size)
    return [Shard(cell, tuple(range(start, min(start + size, count))))
            for cell, count in enumerate(todo) for start in range(0, count, size)]


class ShardQueue:
    """The shards not yet answered; lost shards come back first (see the module docstring)."""

    def __init__(self, shards: Sequence[Shard], attempts: int = 2):
        self.shards = deque(shards)
        self.attempts = max(1, attempts)

    def __len__(self) -> int:
        return len(self.shards)

    def take(self) -> Shard:
        return self.shards.popleft()

    def lost(self, shard: Shard) -> list[Shard]:
        """Requeue ``shard`` after its worker died; return the one-question shards given up on."""
        shard = shard._replace(attempts=shard.attempts + 1)
        if shard.attempts < self.attempts:
            self.shards.appendleft(shard)
        elif len(shard.positions) > 1:
            self.shards.extendleft(Shard(shard.cell, (p,), self.attempts - 1) for p in reversed(shard.positions))
        else:
            return [shard]
        return []
