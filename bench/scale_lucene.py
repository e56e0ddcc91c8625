"""Lucene (pyserini's Anserini) beside our BM25: top-10 agreement on the same corpus and analyzer, and cost.

Corpora: the real 10,977 paragraphs (``../shared/data/corpus/wiki_paragraphs.jsonl``) and the
synthetic 100k-passage DPR TSV of ``bench/scale.py`` (under ``$DYNAPRAG_CACHE/synthetic/``,
generated if missing). Engines, each indexing title and text as one field:

- ``lucene``: Anserini's ``DefaultEnglishAnalyzer`` (Lucene's ``EnglishAnalyzer``, Elasticsearch's
  ``english``: UAX #29 words, possessives, lower-case, 33 stop words, Porter), BM25 k1=1.2, b=0.75;
- ``bm25-elastic-english``: our out-of-core BM25 with the ``elastic-english`` preset (the same
  stop words, stemmer and similarity; ``\\w\\w+`` words, exact document lengths);
- ``bm25-bm25s-lucene``: our default preset (bm25s's stop words, Snowball English), for scale.

Queries: the dev questions of HotpotQA (302, IRCoT's ``dev_subsampled`` sample) and
2WikiMultihopQA (588, HippoRAG 2's dev subset) in ``../shared/data/questions``; StrategyQA is
a train sample and is left out. Agreement with Lucene per engine: mean overlap of the top-10
id sets (``overlap_at_10``), same top-1, identical top-10 lists in order; recall@10 of the
gold supporting passages on the real corpus. Cost per (corpus, engine), each in a fresh child
process: build wall time, index size, open time and resident memory (the JVM's included),
k=3 latency over the first 200 HotpotQA questions, one per call.

Builds and each child's result are checkpointed under ``$DYNAPRAG_CACHE/bench/scale_lucene/``.

    nice -n 19 .venv/bin/python bench/scale_lucene.py
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, git_commit, parse_args, rss_mb, write_results  # noqa: E402
from _scale_common import checkpointed, parse_size, percentile, run_child  # noqa: E402
from _scale_common import work_dir as _work_dir  # noqa: E402


REAL = SHARED_DATA / "corpus" / "wiki_paragraphs.jsonl"
QUESTIONS = {"hotpotqa": SHARED_DATA / "questions" / "hotpotqa.jsonl",
             "2wikimultihopqa": SHARED_DATA / "questions" / "2wikimultihopqa.jsonl"}
ENGINES = ("lucene", "bm25-elastic-english", "bm25-bm25s-lucene")
DEPTH, K, TIMED = 10, 3, 200


def work_dir() -> Path:
    return _work_dir("scale_lucene")


def corpus_file(corpus: str) -> Path:
    if corpus == "real":
        return REAL
    return Path(os.environ["DYNAPRAG_CACHE"]) / "synthetic" / f"dpr-synthetic-{corpus}-seed0.tsv"


def questions() -> dict[str, list[dict]]:
    return {name: [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            for name, path in QUESTIONS.items()}


def config(corpus: str, engine: str):
    from dynaprag.retrieval.bm25_presets import bm25_preset
    from dynaprag.retrieval.config import RetrieverConfig

    folder = work_dir() / f"{engine}-{corpus}"
    settings = {} if engine == "lucene" else bm25_preset(engine.removeprefix("bm25-"))
    return RetrieverConfig(backend="lucene" if engine == "lucene" else "bm25", corpus=str(corpus_file(corpus)),
                           index_dir=str(folder), cache=False, check_duplicates=False, **settings)


def open_engine(corpus: str, engine: str):
    if engine == "lucene":
        from dynaprag.retrieval.lucene import build_or_open

        return build_or_open(config(corpus, engine), progress=False)
    from dynaprag.retrieval.bm25 import build_or_load

    return build_or_load(config(corpus, engine), progress=False, layout="disk")


def case_build(corpus: str, engine: str) -> dict:
    folder = Path(config(corpus, engine).index_dir)
    start = time.perf_counter()
    retriever = open_engine(corpus, engine)
    seconds = time.perf_counter() - start
    meta = getattr(retriever, "meta", {})
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return {"build_s": round(meta.get("build_seconds") or seconds, 1), "index_bytes": size,
            "passages": meta.get("num_passages") or getattr(retriever, "num_docs", 0)}


def case_search(corpus: str, engine: str) -> dict:
    """In a fresh process: open, time k=3 queries, and rank every dev question to depth 10."""
    rss_start = rss_mb()
    start = time.perf_counter()
    retriever = open_engine(corpus, engine)
    open_s = time.perf_counter() - start
    rss_open = rss_mb()
    qs = questions()
    timed = [q["question"] for q in qs["hotpotqa"][:TIMED]]
    retriever.search([timed[0]], K)
    single = []
    for text in timed:
        t = time.perf_counter()
        retriever.search([text], K)
        single.append(time.perf_counter() - t)
    ranked = {name: [[h.id for h in retriever.search([q["question"]], DEPTH)[0]] for q in rows]
              for name, rows in qs.items()}
    return {"open_s": round(open_s, 3), "rss_before_open_mb": round(rss_start, 1),
            "rss_after_open_mb": round(rss_open, 1), "rss_after_queries_mb": round(rss_mb(), 1),
            "single_p50_ms": round(1000 * percentile(single, 50), 2),
            "single_p95_ms": round(1000 * percentile(single, 95), 2),
            "single_queries_per_s": round(len(single) / sum(single), 1), "ranked": ranked}


def agreement(ours: list[list[str]], lucene: list[list[str]]) -> dict:
    n = len(ours)
    return {"overlap_at_10": round(sum(len(set(a) & set(b)) / DEPTH for a, b in zip(ours, lucene)) / n, 4),
            "same_top1": round(sum(bool(a and b and a[0] == b[0]) for a, b in zip(ours, lucene)) / n, 4),
            "identical_top10_lists": round(sum(a == b for a, b in zip(ours, lucene)) / n, 4)}


def recall(ranked: list[list[str]], rows: list[dict], k: int) -> float:
    return round(sum(len(set(r[:k]) & set(q["supporting_doc_ids"])) / len(set(q["supporting_doc_ids"]))
                     for r, q in zip(ranked, rows)) / len(rows), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", default="real,100k", help="real and/or synthetic sizes of bench/scale.py (100k, 1M)")
    ap.add_argument("--force", action="store_true", help="redo the search cases already checkpointed")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    args = parse_args(ap)
    if args.case:
        result = {"build": case_build, "search": case_search}[args.case](args.corpus, args.engine)
        result.update(git_commit=git_commit(), load_avg_1m=round(os.getloadavg()[0], 1))
        print(json.dumps(result))
        return
    qs = questions()
    rows = []
    for corpus in args.corpora.split(","):
        if corpus != "real" and not corpus_file(corpus).is_file():
            from scale import case_corpus  # bench/scale.py's deterministic generator

            case_corpus(parse_size(corpus), 0)
        results = {}
        for engine in ENGINES:
            where = ("--corpus", corpus, "--engine", engine)
            build = checkpointed(work_dir(), f"build-{engine}-{corpus}", False,
                                 lambda: run_child(__file__, "build", *where))
            search = checkpointed(work_dir(), f"search-{engine}-{corpus}", args.force,
                                  lambda: run_child(__file__, "search", *where))
            results[engine] = search
            rows.append({"case": "cost", "corpus": corpus, "engine": engine, "passages": build["passages"],
                         "build_s": build["build_s"],
                         "build_passages_per_s": round(build["passages"] / build["build_s"], 1),
                         "index_bytes": build["index_bytes"],
                         "index_bytes_per_passage": round(build["index_bytes"] / build["passages"], 1),
                         **{k: v for k, v in search.items() if k not in ("ranked", "git_commit", "load_avg_1m")},
                         "build_load_avg_1m": build["load_avg_1m"], "search_load_avg_1m": search["load_avg_1m"],
                         "git_commit": search["git_commit"]})
        for engine in ENGINES[1:]:
            for name, questions_of in qs.items():
                row = {"case": "agreement-with-lucene", "corpus": corpus, "engine": engine, "dataset": name,
                       "questions": len(questions_of),
                       **agreement(results[engine]["ranked"][name], results["lucene"]["ranked"][name])}
                if corpus == "real":
                    for k in (3, 10):
                        row[f"recall_at_{k}"] = recall(results[engine]["ranked"][name], questions_of, k)
                        row[f"lucene_recall_at_{k}"] = recall(results["lucene"]["ranked"][name], questions_of, k)
                rows.append(row)
    from importlib.metadata import version

    write_results("scale_lucene", rows, model="none (BM25)", group_by="case", data={
        "corpora": {"real": str(REAL.relative_to(REAL.parents[3])), "100k": "synthetic DPR TSV of bench/scale.py"},
        "queries": "dev questions: HotpotQA 302 (IRCoT dev_subsampled), 2WikiMultihopQA 588 (HippoRAG 2 dev subset)",
        "timed_queries": f"first {TIMED} HotpotQA dev questions, k={K}, one per call"},
        extra={"pyserini": version("pyserini"), "java": _java_version()},
        notes="lucene: pyserini's Anserini (SimpleIndexer/SimpleSearcher through pyjnius), DefaultEnglishAnalyzer "
              "(porter, Lucene's 33 stop words), BM25 k1=1.2 b=0.75, raw JSON stored, 2 indexing threads. bm25-*: "
              "our out-of-core BM25 (disk layout), one thread. All index title + text as one field. index_bytes: the "
              "whole index folder (ours: score arrays, vocabulary and the passage store; Lucene: postings, norms "
              "and the stored raw JSON, compressed). overlap_at_10: "
              "mean |ours ∩ lucene| / 10 of the top-10 ids; same_top1 and identical_top10_lists are shares of "
              "questions. rss_*: the searching process (for lucene the JVM's heap and code too). Latency with the "
              "index just built (page cache warm).")


def _java_version() -> str:
    out = subprocess.run(["java", "-version"], capture_output=True, text=True)
    return (out.stderr or out.stdout).splitlines()[0] if (out.stderr or out.stdout) else "unknown"


if __name__ == "__main__":
    main()
