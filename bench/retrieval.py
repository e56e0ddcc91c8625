"""Retrieval benchmark: recall@3/@10 of gold passages, build time, queries/s and peak memory.

Backends: BM25 (bm25s, Lucene, k1=1.2, b=0.75, stemming + stop-words), dense (all-MiniLM-L6-v2 +
FAISS IndexFlatIP), hybrid (RRF k=60), and rank_bm25's BM25Okapi on the same tokens as a speed
reference (bm25s / rank_bm25 queries-per-second ratio measured in this run, timing rounds
alternated). Corpus: ``../shared/data/corpus/wiki_paragraphs.jsonl``; questions: HotpotQA and
2WikiMultihopQA with ``supporting_doc_ids``.

Each case runs in its own process (so peak RSS is per backend) and is checkpointed under
``$DYNAPRAG_CACHE/bench/retrieval``; the dense embeddings are cached with the dense index, so
a rerun skips the multi-minute encoding (its build time is the one recorded at build).

    .venv/bin/python bench/retrieval.py [--quick] [--force]
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
from _common import ROOT, SHARED_DATA, parse_args, peak_rss_mb, write_results  # noqa: E402

CORPUS = SHARED_DATA / "corpus" / "wiki_paragraphs.jsonl"
DATASETS = {"hotpotqa": SHARED_DATA / "questions" / "hotpotqa.jsonl",
            "2wikimultihopqa": SHARED_DATA / "questions" / "2wikimultihopqa.jsonl"}
CASES = ("bm25", "dense", "hybrid", "rank_bm25")
KS = (3, 10)
TIMED_QUERIES = 100  # single-query timing on the first 100 questions (recall uses all of them)


def work_dir(quick: bool) -> Path:
    base = Path(os.environ["DYNAPRAG_CACHE"]) / "bench" / ("retrieval-quick" if quick else "retrieval")
    base.mkdir(parents=True, exist_ok=True)
    return base


def load_questions(quick: bool) -> dict[str, list[dict]]:
    out = {}
    for name, path in DATASETS.items():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        out[name] = rows[:40] if quick else rows
    return out


def corpus_for(quick: bool) -> Path:
    """The full corpus, or for ``--quick`` its first 2,000 paragraphs plus the quick questions' gold."""
    if not quick:
        return CORPUS
    path = work_dir(True) / "corpus.jsonl"
    if not path.is_file():
        gold = {d for qs in load_questions(True).values() for q in qs for d in q["supporting_doc_ids"]}
        lines = CORPUS.read_text().splitlines()
        keep = [line for i, line in enumerate(lines) if i < 2000 or json.loads(line)["id"] in gold]
        path.write_text("\n".join(keep) + "\n")
    return path


def recall(ranked: list[str], gold: list[str], k: int) -> float:
    return len(set(ranked[:k]) & set(gold)) / len(set(gold)) if gold else 0.0


def run_case(case: str, quick: bool) -> dict:
    """One backend in this process: build (timed), search all questions in one batch and score
    recall, then time one-query-per-call search on the first ``TIMED_QUERIES`` questions."""
    from dynaprag.retrieval import RetrieverConfig, build_retriever

    corpus = corpus_for(quick)
    questions = load_questions(quick)
    start = time.perf_counter()
    index_dirs = work_dir(quick) / "indexes"
    backend = "bm25" if case == "rank_bm25" else case
    # hybrid reuses the bm25 and dense indexes (index_dir/<part>), so its build time is their sum
    folder = index_dirs if backend == "hybrid" else index_dirs / backend
    config = RetrieverConfig(backend=backend, corpus=str(corpus), index_dir=str(folder), cache=False)
    if case == "bm25":  # cheap: always rebuild so the build time is measured in this run
        import shutil

        shutil.rmtree(index_dirs / "bm25", ignore_errors=True)
    retriever = build_retriever(config, progress=False)
    load_s = time.perf_counter() - start
    metas = [r.meta for r in getattr(retriever, "retrievers", [retriever])]
    build_s = sum(m["build_seconds"] for m in metas)
    result = {"case": case, "index_build_s": round(build_s, 2), "index_load_s": round(load_s, 2),
              "datasets": {}}
    if case == "rank_bm25":
        return run_rank_bm25(retriever, questions, result)
    for name, qs in questions.items():
        retriever.search([qs[0]["question"]], 10)  # warm-up (encoder load, page cache)
        start = time.perf_counter()
        ranked = [[h.id for h in hits] for hits in retriever.search([q["question"] for q in qs], 10)]
        batch_s = time.perf_counter() - start
        timed = qs[:TIMED_QUERIES]
        start = time.perf_counter()
        for q in timed:
            retriever.search([q["question"]], 10)
        seconds = (time.perf_counter() - start) * len(qs) / len(timed)
        result["datasets"][name] = _scores(qs, ranked, seconds, batch_s)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    result["load_avg_1m"] = round(os.getloadavg()[0], 1)
    return result


def _scores(qs: list[dict], ranked: list[list[str]], seconds: float, batch_s: float | None) -> dict:
    out = {f"recall_at_{k}": round(sum(recall(r, q["supporting_doc_ids"], k) for r, q in zip(ranked, qs))
                                   / len(qs), 4) for k in KS}
    out.update(questions=len(qs), queries_per_s=round(len(qs) / seconds, 1),
               ms_per_query=round(1000 * seconds / len(qs), 2))
    if batch_s is not None:
        out["batched_queries_per_s"] = round(len(qs) / batch_s, 1)
    return out


def run_rank_bm25(bm25, questions: dict, result: dict) -> dict:
    """rank_bm25 BM25Okapi (k1=1.2, b=0.75) on bm25s's exact tokens; timing alternates with bm25s."""
    import numpy as np
    from rank_bm25 import BM25Okapi

    tok = bm25.tokenizer
    start = time.perf_counter()
    docs = [tok.decode([ids])[0] for ids in tok.tokenize(
        [(f"{p.title}\n{p.text}" if p.title else p.text) for p in bm25.store], update_vocab=False,
        show_progress=False)]
    okapi = BM25Okapi(docs, k1=1.2, b=0.75)
    result["index_build_s"] = round(time.perf_counter() - start, 2)
    ids = [p.id for p in bm25.store]
    for name, qs in questions.items():
        texts = [q["question"] for q in qs]
        q_tokens = [tok.decode([x])[0] for x in tok.tokenize(texts, update_vocab=False, show_progress=False)]
        times = {"bm25s": 0.0, "rank_bm25": 0.0}
        ranked: list[list[str]] = []
        for half in (slice(0, len(qs) // 2), slice(len(qs) // 2, None)):  # alternate the two
            start = time.perf_counter()
            for text in texts[half]:
                bm25.search([text], 10)
            times["bm25s"] += time.perf_counter() - start
            start = time.perf_counter()
            for tokens in q_tokens[half]:
                scores = okapi.get_scores(tokens)
                top = np.argsort(-scores)[:10]
                ranked.append([ids[i] for i in top if scores[i] > 0])
            times["rank_bm25"] += time.perf_counter() - start
        row = _scores(qs, ranked, times["rank_bm25"], None)
        row["bm25s_queries_per_s_same_run"] = round(len(qs) / times["bm25s"], 1)
        row["bm25s_speedup_vs_rank_bm25"] = round(times["rank_bm25"] / times["bm25s"], 1)
        result["datasets"][name] = row
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    result["load_avg_1m"] = round(os.getloadavg()[0], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 questions per dataset, ~2k passages")
    parser.add_argument("--force", action="store_true", help="recompute cases already checkpointed")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parse_args(parser)
    if not CORPUS.is_file():
        sys.exit(f"shared data not found at {CORPUS}")
    if args.case:  # child process: one case, result JSON on stdout's last line
        print(json.dumps(run_case(args.case, args.quick)))
        return
    results = []
    for case in CASES:
        checkpoint = work_dir(args.quick) / f"{case}.json"
        if checkpoint.is_file() and not args.force:
            results.append(json.loads(checkpoint.read_text()))
            print(f"{case}: checkpointed ({checkpoint})", flush=True)
            continue
        print(f"{case}: running", flush=True)
        cmd = [sys.executable, __file__, "--case", case] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{case} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        checkpoint.write_text(json.dumps(result, indent=2))
        results.append(result)
    rows = []
    for res in results:
        for dataset, scores in res["datasets"].items():
            rows.append({"backend": res["case"], "dataset": dataset, **scores,
                         "index_build_s": res["index_build_s"], "peak_rss_mb": res["peak_rss_mb"],
                         "load_avg_1m": res.get("load_avg_1m", "")})
    qs = load_questions(args.quick)
    write_results("retrieval" + ("_quick" if args.quick else ""), rows, model="all-MiniLM-L6-v2 (dense, hybrid)",
                  data={"corpus": str(corpus_for(args.quick).relative_to(ROOT.parent)) if not args.quick
                        else f"{CORPUS.relative_to(ROOT.parent)} (first 2,000 + gold)",
                        "questions": {name: len(q) for name, q in qs.items()}},
                  notes="recall_at_k: mean fraction of a question's supporting_doc_ids in the top k. "
                        "queries_per_s: one query per search call (how the methods call it), timed on the "
                        "first 100 questions; batched: all questions in one call. rank_bm25 uses bm25s's tokens; its speed "
                        "ratio is measured against bm25s in the same process, alternating halves. load_avg_1m: "
                        "the machine's 1-minute load when the case finished (2 cores shared with other "
                        "jobs: absolute times are for the record only).")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
