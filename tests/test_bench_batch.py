"""``bench/batch.py``: per-case peak memory and the rows it reports."""
from __future__ import annotations

import math
import time

from bench_scripts import load_bench

bench = load_bench("batch")


def test_rss_peak_sees_memory_taken_and_freed_inside_the_block():
    import mmap

    import numpy as np

    from _common import RssPeak

    before = np.ones(40 * 2**20 // 8)  # held across the block: not growth
    with RssPeak(interval=0.005) as memory:
        # Fresh anonymous pages, not malloc: a worker that earlier freed a large block keeps it in
        # malloc's free lists, and reusing it would add nothing to the RSS (the CI flake this fixes).
        pages = mmap.mmap(-1, 200 * 2**20)
        np.frombuffer(pages, dtype=np.uint8)[:] = 1  # 200 MB touched, then freed before the block ends
        time.sleep(0.2)  # the sampler needs the GIL to look (the fill above holds it)
        pages.close()
    assert memory.growth_mb > 150
    assert memory.before_mb > before.nbytes / 2**20


def _case(method, batch, seconds, peak, growth, run="r", dataset="hotpotqa", texts=("a", "b")):
    return {"method": method, "dataset": dataset, "batch_size": batch, "restack": "on-change",
            "effective_batch_size": 1 if method == "prag" else batch, "n": len(texts), "seconds": seconds,
            "generated_tokens": 10, "retrievals": 2, "rows_in_batched_passes": 0, "batched_passes": 0,
            "texts": list(texts), "run": run, "peak_rss_mb": peak, "peak_rss_growth_mb": growth}


def test_rows_pair_batch_1_of_the_same_run_and_report_the_largest_peak():
    cases = [_case("sr-rag", 1, 10.0, 1000, 50), _case("sr-rag", 8, 4.0, 1400, 400),
             _case("sr-rag", 8, 5.0, 1300, 300, dataset="2wikimultihopqa", run="other"),
             _case("prag", 1, 6.0, 1100, 90), _case("prag", 8, 6.0, 1100, 95)]
    rows = {(r["method"], r["batch_size"]): r for r in bench.rows_of(cases)}
    assert rows[("sr-rag", 8)]["ratio_to_batch_1"] == 2.5  # the 2Wiki case has no batch-1 partner in its run
    assert rows[("sr-rag", 8)]["peak_rss_mb"] == 1400 and rows[("sr-rag", 8)]["peak_rss_growth_mb"] == 400
    assert rows[("prag", 8)]["effective_batch_size"] == 1 and rows[("prag", 8)]["ratio_to_batch_1"] == 1.0


def test_cases_from_before_memory_was_sampled_have_no_peak():
    old = _case("dragin", 1, 3.0, 0, 0)
    del old["peak_rss_mb"], old["peak_rss_growth_mb"]
    (row,) = bench.rows_of([old])
    assert math.isnan(row["peak_rss_mb"]) and math.isnan(row["peak_rss_growth_mb"])


def test_a_case_without_memory_does_not_hide_the_peak_of_one_with_it():
    old = _case("fs-rag", 8, 3.0, 0, 0, dataset="2wikimultihopqa")
    del old["peak_rss_mb"], old["peak_rss_growth_mb"]
    rows = bench.rows_of([old, _case("fs-rag", 8, 3.0, 1500, 120)])
    assert rows[0]["peak_rss_mb"] == 1500 and rows[0]["peak_rss_growth_mb"] == 120


def test_cpu_ratio_pairs_cpu_seconds_and_is_blank_for_cases_without_them():
    timed = [{**_case("sr-rag", 1, 10.0, 1000, 50), "cpu_seconds": 8.0},
             {**_case("sr-rag", 8, 9.0, 1400, 400), "cpu_seconds": 2.0},  # wall time stretched by other load
             _case("dragin", 1, 10.0, 1000, 50), _case("dragin", 8, 5.0, 1000, 50)]
    rows = {(r["method"], r["batch_size"]): r for r in bench.rows_of(timed)}
    assert rows[("sr-rag", 8)]["cpu_ratio_to_batch_1"] == 4.0
    assert math.isnan(rows[("dragin", 8)]["cpu_ratio_to_batch_1"])
