"""``bench/serve.py``: the latency percentile it reports."""
from __future__ import annotations

import math

from bench_scripts import load_bench

bench = load_bench("serve")


def test_percentile_is_the_nearest_rank():
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert bench.percentile(values, 95) == 19.0  # rank ceil(0.95 * 20) = 19
    assert bench.percentile(values, 50) == 10.0
    assert bench.percentile([3.0, 1.0, 2.0], 100) == 3.0
    assert bench.percentile([4.0], 5) == 4.0
    assert math.isnan(bench.percentile([], 95))
