"""bench/scale_lucene.py's agreement and recall arithmetic on hand-made rankings."""
from __future__ import annotations

from bench_scripts import load_bench

bench = load_bench("scale_lucene")


def test_agreement_counts_shared_ids_first_hits_and_whole_lists():
    lucene = [[str(i) for i in range(10)], [str(i) for i in range(10)]]
    ours = [[str(i) for i in range(10)], ["9"] + [str(i) for i in range(8)] + ["x"]]
    got = bench.agreement(ours, lucene)
    assert got == {"overlap_at_10": round((10 + 9) / 20, 4), "same_top1": 0.5, "identical_top10_lists": 0.5}


def test_recall_is_the_share_of_gold_passages_in_the_top_k():
    rows = [{"supporting_doc_ids": ["a", "b"]}, {"supporting_doc_ids": ["c"]}]
    assert bench.recall([["a", "x", "b"], ["y", "c"]], rows, 2) == round((0.5 + 1.0) / 2, 4)
    assert bench.recall([["a", "x", "b"], ["y", "c"]], rows, 3) == 1.0
