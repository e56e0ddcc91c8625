"""How `encode_with_ray` cuts its documents into augmentation batches (no Ray needed)."""
from __future__ import annotations

import pytest

from dynaprag.parametric.distributed import even_batches


def rows_per_worker(batches, workers):
    """Each worker's rows when every batch goes to the worker that frees up first (as the driver does)."""
    load = [0] * workers
    for batch in batches:
        load[load.index(min(load))] += len(batch)
    return load


@pytest.mark.parametrize("n, workers, most, sizes", [
    (12, 2, 4, [3, 3, 3, 3]),        # not 4 + 4 + 4, which idles one worker for the last batch
    (9, 2, 4, [3, 2, 2, 2]),
    (104, 2, 4, [4] * 26),
    (3, 2, 4, [2, 1]),
    (1, 2, 4, [1]),
    (5, 1, 4, [3, 2]),
    (0, 2, 4, []),
])
def test_batches_are_even_and_fill_whole_rounds(n, workers, most, sizes):
    items = list(range(n))
    batches = even_batches(items, workers, most)
    assert [len(b) for b in batches] == sizes
    assert [x for b in batches for x in b] == items  # consecutive, nothing lost or repeated


@pytest.mark.parametrize("n", range(1, 40))
def test_no_worker_has_more_rows_than_it_must(n):
    """The busiest worker decodes at most one row more than an exact half, and never more than
    with batches of the limit cut one after the other."""
    items = list(range(n))
    even = max(rows_per_worker(even_batches(items, 2, 4), 2))
    fixed = max(rows_per_worker([items[i:i + 4] for i in range(0, n, 4)], 2))
    assert all(len(b) <= 4 for b in even_batches(items, 2, 4))
    assert even <= fixed
    assert even <= -(-n // 2) + 1
