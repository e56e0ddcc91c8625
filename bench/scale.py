"""BM25 at Wikipedia scale: build, open and search synthetic DPR-layout corpora of 100k to 21M passages.

For each size: a deterministic synthetic ``psgs_w100.tsv`` (statistics fitted on
``../shared/data/corpus/wiki_paragraphs.jsonl``, :mod:`dynaprag.retrieval.synthetic`) under
``$DYNAPRAG_CACHE/synthetic/``; the out-of-core BM25 build (:mod:`dynaprag.retrieval.bm25_disk`)
in a child process (build wall time, its peak RSS, index size on disk); then, in a fresh child,
open time, resident memory after open, and k=3 search over real HotpotQA questions, one per call
and in batches of 8 (queries/s, p50/p95 latency, resident memory after the queries). A ``recall``
case checks that the out-of-core layout retrieves as the in-memory one on the real 10,977
paragraphs (recall@3/@10 of gold passages, HotpotQA + 2WikiMultihopQA).

Everything resumes: the corpus generation and the build continue from their last chunk after a
kill, and each finished case is checkpointed under ``$DYNAPRAG_CACHE/bench/scale/``; the results
file always holds every checkpointed size, so a 21M run started later adds its rows.

    nice -n 19 .venv/bin/python bench/scale.py --sizes 100k,1M
    nohup nice -n 19 .venv/bin/python bench/scale.py --sizes 21M --workers 2 > bench/results/scale.21M.log 2>&1 &
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, git_commit, parse_args, peak_rss_mb, rss_mb, write_results  # noqa: E402
from _scale_common import checkpointed, label, parse_size, percentile, run_child  # noqa: E402
from _scale_common import work_dir as _work_dir  # noqa: E402


CORPUS = SHARED_DATA / "corpus" / "wiki_paragraphs.jsonl"
QUESTIONS = {"hotpotqa": SHARED_DATA / "questions" / "hotpotqa.jsonl",
             "2wikimultihopqa": SHARED_DATA / "questions" / "2wikimultihopqa.jsonl"}
K, BATCH, TIMED = 3, 8, 200
#: published figures the issue compares against (numbers as quoted in issue 32)
ANCHORS = {"elasticsearch_dpr_index": "an 11 GB Elasticsearch/Lucene index of the 21M passages, built over hours "
                                      "(DRAGIN/PRAG/SeaKR setups)",
           "bm25s_queries_per_s": {"2.7M passages": 42, "8.8M passages": 12}}
TARGETS = {"build_h": 2, "build_peak_rss_gb": 16, "open_s": 30, "open_rss_gb": 2, "p50_ms": 150}


def work_dir() -> Path:
    return _work_dir("scale")


def corpus_path(n: int, seed: int) -> Path:
    return Path(os.environ["DYNAPRAG_CACHE"]) / "synthetic" / f"dpr-synthetic-{label(n)}-seed{seed}.tsv"


def du_bytes(folder: Path, names=None) -> int:
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file() and (names is None or f.name in names))


def questions(n: int | None = None) -> dict[str, list[dict]]:
    out = {}
    for name, path in QUESTIONS.items():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        out[name] = rows[:n] if n else rows
    return out


def case_corpus(n: int, seed: int) -> dict:
    from dynaprag.retrieval.synthetic import fit_statistics, write_synthetic_tsv

    start = time.perf_counter()
    describe = write_synthetic_tsv(corpus_path(n, seed), n, fit_statistics(CORPUS), seed=seed)
    return {**describe, "generate_s": round(time.perf_counter() - start, 1),
            "tsv_bytes": corpus_path(n, seed).stat().st_size}


def case_build(n: int, seed: int, chunk_size: int, workers: int) -> dict:
    """The out-of-core build in this (child) process: wall time and this process's peak RSS."""
    from dynaprag.corpora import corpus_fingerprint
    from dynaprag.retrieval.bm25_disk import build_disk_index
    from dynaprag.retrieval.readers import read_corpus

    tsv = corpus_path(n, seed)
    folder = work_dir() / f"bm25-{label(n)}"
    start = time.perf_counter()
    meta = build_disk_index(read_corpus(tsv, check_duplicates=False), folder, chunk_size=chunk_size, workers=workers,
                            total=n, progress=True, source={"corpus": str(tsv), "fingerprint": corpus_fingerprint(tsv)})
    arrays = du_bytes(folder) - du_bytes(folder, {"passages.jsonl", "passages.offsets.npy"})
    return {"build_s": round(meta["build_seconds"], 1), "build_last_run_s": round(time.perf_counter() - start, 1),
            "build_runs": meta["build_runs"], "build_peak_rss_mb": round(peak_rss_mb(), 1),
            "build_worker_peak_rss_mb": round(_children_peak_rss_mb(), 1),
            "index_bytes": arrays, "store_bytes": du_bytes(folder, {"passages.jsonl", "passages.offsets.npy"}),
            "terms": meta["num_terms"], "postings": meta["num_postings"], "passages": meta["num_passages"],
            "checksum": meta["source"]["checksum"], "chunk_size": chunk_size, "workers": workers}


def _children_peak_rss_mb() -> float:
    """The largest peak RSS of this process's finished children (the chunk workers), 0 without."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def case_search(n: int) -> dict:
    """Open the index in this fresh process and search: open time, RSS, latency, throughput."""
    rss_start = rss_mb()
    start = time.perf_counter()
    import bm25s  # noqa: F401  (library imports: once per process, timed apart from opening the index)

    from dynaprag.retrieval.bm25 import BM25Retriever

    import_s = time.perf_counter() - start
    folder = work_dir() / f"bm25-{label(n)}"
    start = time.perf_counter()
    retriever = BM25Retriever(folder)
    open_s = time.perf_counter() - start
    rss_open = rss_mb()
    texts = [q["question"] for q in questions(TIMED)["hotpotqa"]]
    retriever.search([texts[0]], K)  # first query: imports and page faults of a cold process
    single, single_cpu = [], []
    for text in texts:
        t, c = time.perf_counter(), time.process_time()
        retriever.search([text], K)
        single.append(time.perf_counter() - t)
        single_cpu.append(time.process_time() - c)
    batches = []
    for i in range(0, len(texts) - BATCH + 1, BATCH):
        t = time.perf_counter()
        retriever.search(texts[i:i + BATCH], K)
        batches.append(time.perf_counter() - t)
    dense_cpu = []  # the same top-k summing every posting (bm25s's way), for the record
    for text in texts:
        c = time.process_time()
        retriever.disk.top_k(text, K, prune=False)
        dense_cpu.append(time.process_time() - c)
    return {"import_s": round(import_s, 3), "open_s": round(open_s, 3), "rss_before_open_mb": round(rss_start, 1),
            "rss_after_open_mb": round(rss_open, 1), "rss_after_queries_mb": round(rss_mb(), 1), "queries": len(texts),
            "single_queries_per_s": round(len(single) / sum(single), 2),
            "single_p50_ms": round(1000 * percentile(single, 50), 1),
            "single_p95_ms": round(1000 * percentile(single, 95), 1),
            "single_cpu_p50_ms": round(1000 * percentile(single_cpu, 50), 1),
            "single_cpu_p95_ms": round(1000 * percentile(single_cpu, 95), 1),
            "batch8_queries_per_s": round(BATCH * len(batches) / sum(batches), 2),
            "batch8_p50_ms": round(1000 * percentile(batches, 50), 1),
            "batch8_p95_ms": round(1000 * percentile(batches, 95), 1),
            "dense_cpu_p50_ms": round(1000 * percentile(dense_cpu, 50), 1),
            "dense_cpu_p95_ms": round(1000 * percentile(dense_cpu, 95), 1)}


def case_recall() -> dict:
    """The real 10,977 paragraphs indexed both ways: recall@3/@10 and whether the hits agree."""
    from dynaprag.corpora import read_passages
    from dynaprag.retrieval.bm25 import BM25Retriever

    out = {}
    for layout in ("memory", "disk"):
        folder = work_dir() / f"recall-{layout}"
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        retriever = BM25Retriever.build(read_passages(CORPUS), folder, layout=layout, progress=False)
        for name, qs in questions().items():
            ranked = [[h.id for h in hits] for hits in retriever.search([q["question"] for q in qs], 10)]
            out.setdefault(name, {})[layout] = ranked
            for k in (3, 10):
                value = sum(len(set(r[:k]) & set(q["supporting_doc_ids"])) / len(set(q["supporting_doc_ids"]))
                            for r, q in zip(ranked, qs)) / len(qs)
                out[name][f"{layout}_recall_at_{k}"] = round(value, 4)
    rows = {}
    for name, res in out.items():
        same = sum(a == b for a, b in zip(res.pop("memory"), res.pop("disk")))
        rows[name] = {**res, "questions": len(questions()[name]), "identical_top10_lists": same}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100k,1M", help="comma-separated passage counts, e.g. 100k,1M,4M,21M")
    ap.add_argument("--seed", type=int, default=0, help="synthetic corpus seed")
    ap.add_argument("--chunk-size", type=int, default=100_000, help="passages per build chunk")
    ap.add_argument("--workers", type=int, default=1, help="processes analysing chunks during the build")
    ap.add_argument("--force", action="store_true", help="redo the search and recall cases already checkpointed")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--size", help=argparse.SUPPRESS)
    args = parse_args(ap)
    if args.case:  # a child: one case, its result as JSON on stdout's last line
        n = parse_size(args.size) if args.size else 0
        commit = git_commit()  # the code this case runs (a long build may outlive later commits)
        result = {"corpus": lambda: case_corpus(n, args.seed),
                  "build": lambda: case_build(n, args.seed, args.chunk_size, args.workers),
                  "search": lambda: case_search(n), "recall": case_recall}[args.case]()
        result.update(git_commit=commit, load_avg_1m=round(os.getloadavg()[0], 1))
        print(json.dumps(result))
        return
    for text in args.sizes.split(","):
        n = parse_size(text)
        name = f"{label(n)}-seed{args.seed}"
        checkpointed(work_dir(), f"corpus-{name}", False,
                     lambda: run_child(__file__, "corpus", "--size", text, "--seed", str(args.seed)))
        checkpointed(work_dir(), f"build-{label(n)}", False, lambda: run_child(
            __file__, "build", "--size", text, "--seed", str(args.seed), "--chunk-size", str(args.chunk_size),
            "--workers", str(args.workers)))
        checkpointed(work_dir(), f"search-{label(n)}", args.force,
                     lambda: run_child(__file__, "search", "--size", text))
    recall = checkpointed(work_dir(), "recall", args.force, lambda: run_child(__file__, "recall"))
    write_report(recall)


def write_report(recall: dict) -> None:
    rows = []
    for build_file in sorted(work_dir().glob("build-*.json"), key=lambda p: parse_size(p.stem.split("-")[1])):
        size = build_file.stem.split("-")[1]
        build = json.loads(build_file.read_text())
        search_file = work_dir() / f"search-{size}.json"
        search = json.loads(search_file.read_text()) if search_file.is_file() else {}
        corpus = json.loads(next(work_dir().glob(f"corpus-{size}-seed*.json")).read_text())
        n = build["passages"]
        rows.append({"case": "bm25-disk", "passages": n, "tsv_bytes": corpus["tsv_bytes"],
                     "terms": build["terms"], "postings": build["postings"], **{k: v for k, v in build.items()
                     if k not in ("passages", "terms", "postings", "checksum", "git_commit", "load_avg_1m")},
                     "build_git_commit": build.get("git_commit", ""), "build_load_avg_1m": build.get("load_avg_1m", ""),
                     "build_passages_per_s": round(n / build["build_s"], 1),
                     "index_bytes_per_passage": round(build["index_bytes"] / n, 1),
                     "store_bytes_per_passage": round(build["store_bytes"] / n, 1),
                     "expected_vocabulary": corpus["expected_vocabulary"],
                     **{k: v for k, v in search.items() if k not in ("git_commit", "load_avg_1m")},
                     "search_git_commit": search.get("git_commit", ""),
                     "search_load_avg_1m": search.get("load_avg_1m", "")})
    for name, res in recall.items():
        if isinstance(res, dict):
            rows.append({"case": "recall-real-corpus", "dataset": name, **res,
                         "git_commit": recall.get("git_commit", "")})
    write_results("scale", rows, model="none (BM25)", group_by="case", data={
        "corpora": "synthetic DPR TSV, fitted on " + str(CORPUS.relative_to(CORPUS.parents[3])),
        "queries": f"first {TIMED} HotpotQA questions, k={K}", "recall": "wiki_paragraphs.jsonl, all questions"},
        extra={"anchors": ANCHORS, "targets_21M": TARGETS,
               "fitted_statistics": next((json.loads(p.read_text())["fitted_on"] for p in
                                          sorted(work_dir().glob("corpus-*.json"))), {})},
        notes="bm25-disk: out-of-core chunked build (one process, one thread), index opened memory-mapped in a fresh "
              "process. build_s sums every run of a resumed build; build_peak_rss_mb is the building process's "
              "(build_worker_peak_rss_mb: the largest chunk worker's, with --workers > 1); "
              "index_bytes: score arrays + vocabulary; store_bytes: the passage store (JSONL + offsets). Latency "
              "with the index in the page cache (just built): single_* one query per call (MaxScore pruning, "
              "exact), *_cpu_* the process's CPU time per query (what a core costs when the machine is not "
              "shared), dense_cpu_*: the same top k summing every posting as bm25s does. recall-real-corpus: the same "
              "10,977 paragraphs "
              "indexed in memory (bm25s) and out of core; identical_top10_lists counts questions whose top-10 "
              "ids agree in order (ties may order differently: by row out of core, by argpartition in bm25s).")


if __name__ == "__main__":
    main()
