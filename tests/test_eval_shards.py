"""Shards of a distributed evaluation and the question-order writer (no Ray, no model)."""
from __future__ import annotations

import random

from dynaprag.eval.runner import InOrder
from dynaprag.eval.shards import Shard, ShardQueue, cut_shards


def test_shards_cover_every_question_once_in_run_order():
    shards = cut_shards([5, 0, 3], size=2)
    assert shards == [Shard(0, (0, 1)), Shard(0, (2, 3)), Shard(0, (4,)), Shard(2, (0, 1)), Shard(2, (2,))]
    assert cut_shards([3], size=0) == [Shard(0, (0,)), Shard(0, (1,)), Shard(0, (2,))]


def test_a_lost_shard_comes_back_first_then_split_then_given_up():
    queue = ShardQueue(cut_shards([4], size=2), attempts=2)
    first = queue.take()
    assert queue.lost(first) == [] and queue.take() == Shard(0, (0, 1), attempts=1)  # before (2, 3)
    assert queue.lost(Shard(0, (0, 1), attempts=1)) == []  # second loss: one question per shard, one try each
    assert [queue.take() for _ in range(3)] == [Shard(0, (0,), 1), Shard(0, (1,), 1), Shard(0, (2, 3))]
    assert queue.lost(Shard(0, (1,), 1)) == [Shard(0, (1,), 2)] and len(queue) == 0  # given up: an error record


def test_in_order_releases_each_result_once_in_question_order():
    order = InOrder()
    positions = list(range(50))
    random.Random(7).shuffle(positions)
    released = [p for position in positions for p, _ in order.put(position, str(position))]
    assert released == list(range(50)) and order.held == {}
