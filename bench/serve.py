"""The server under a burst of concurrent requests: refusals, wall time and latency per batch size.

Issue 17's server target: 20 simultaneous requests held with no 503 at batch 8 on the 135M
model (before batching, 20 concurrent requests got 9 x 200 and 11 x 503). One process starts the
real server (:func:`dynaprag.serve.app.create_app` on uvicorn, :class:`ServerThread`) over one
loaded pipeline, and for each method fires ``--requests`` requests at once (the first distinct
questions of ``../shared/data/questions/hotpotqa.jsonl``, every other one streamed) at:

* ``batch 1, queue 4``: one request at a time with a short waiting line (the old behaviour:
  the surplus is refused with 503);
* ``batch 1, queue N``: one at a time, everyone may wait (the throughput baseline);
* ``batch 8, queue 32``: ``dynaprag serve``'s defaults (batched, newcomers join a running batch).

Cases alternate order per method, so drift does not favour one. Reported per case: responses by
status, wall time for the burst, requests per hour (answered ones), latency p50/p95 of the answered
ones, the worker's batches, largest batch and joins, and ``ratio_to_batch_1`` (the answered
requests per hour over ``batch 1, queue N``'s for the same method).

    .venv/bin/python bench/serve.py                  # smollm2-135m, sr-rag and dragin, 20 requests
    .venv/bin/python bench/serve.py --quick          # 4 requests, sr-rag (smoke)
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import sys
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CHECKPOINTS, DEFAULT_MODEL, SHARED_DATA, load_questions, peak_rss_mb, result_name, write_results,
)

CASES = (("batch 1, queue 4", 1, 4), ("batch 1, queue N", 1, None), ("batch 8, queue 32", 8, 32))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def ask(url: str, body: dict) -> tuple[int, float]:
    """POST one completion (streamed if ``body`` says so): its status and seconds to the last byte."""
    import httpx

    start = time.perf_counter()
    with httpx.Client(timeout=3600) as http:
        if body.get("stream"):
            with http.stream("POST", f"{url}/v1/completions", json=body) as resp:
                for _ in resp.iter_lines():
                    pass
                status = resp.status_code
        else:
            status = http.post(f"{url}/v1/completions", json=body).status_code
    return status, time.perf_counter() - start


def run_case(pipeline, method: str, questions: list[str], batch: int, queue: int, max_tokens: int) -> dict:
    """Start a server at ``batch``/``queue``, fire every question at once, and stop it."""
    import httpx

    from dynaprag.serve.app import create_app
    from dynaprag.serve.server import ServerThread

    with ServerThread(create_app(pipeline, batch_size=batch, max_queue=queue)) as server:
        model = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]
        bodies = [{"model": model, "prompt": q, "max_tokens": max_tokens, "stream": i % 2 == 1,
                   "dynaprag": {"method": method}} for i, q in enumerate(questions)]
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(bodies)) as pool:
            results = list(pool.map(lambda b: ask(server.url, b), bodies))
        seconds = time.perf_counter() - start
        stats = httpx.get(f"{server.url}/health").json()["queue"]
    answered = [s for code, s in results if code == 200]
    codes: dict[str, int] = {}
    for code, _ in results:
        codes[str(code)] = codes.get(str(code), 0) + 1
    return {"method": method, "requests": len(questions), "batch_size": batch, "max_queue": queue,
            "ok_200": codes.get("200", 0), "refused_503": codes.get("503", 0),
            "other_status": sum(v for k, v in codes.items() if k not in ("200", "503")),
            "burst_seconds": seconds, "answered_per_hour": 3600 * len(answered) / seconds,
            "latency_p50_s": median(answered) if answered else float("nan"),
            "latency_p95_s": percentile(answered, 95),
            "batches": stats["batches"], "largest_batch": stats["largest_batch"], "joined": stats["joined"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--methods", default="sr-rag,dragin")
    ap.add_argument("--requests", type=int, default=20, help="simultaneous requests per case")
    ap.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--quick", action="store_true", help="4 requests, sr-rag, 16 tokens; results not committed")
    args = ap.parse_args()
    if args.quick:
        args.methods, args.requests, args.max_tokens = "sr-rag", 4, 16
    if not (SHARED_DATA / "questions").is_dir():
        sys.exit(f"evaluation data not found at {SHARED_DATA}")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from dynaprag.pipeline import Pipeline, PipelineConfig
    from dynaprag.retrieval import RetrieverConfig

    questions = [q["question"] for q in load_questions("hotpotqa", args.requests)]
    pipeline = Pipeline.from_config(PipelineConfig(
        model=args.model, dtype=args.dtype, max_new_tokens=args.max_tokens,
        retrieval=RetrieverConfig(corpus=str(SHARED_DATA / "corpus" / "wiki_paragraphs.jsonl"))))
    pipeline.answer(questions[0], method="sr-rag", max_new_tokens=4)  # index pages, kernels: not timed
    rows = []
    for m_i, method in enumerate(m for m in args.methods.split(",") if m):
        cases = CASES if m_i % 2 == 0 else tuple(reversed(CASES))
        done = {}
        for name, batch, queue in cases:
            row = {"case": name, **run_case(pipeline, method, questions, batch, queue or len(questions),
                                            args.max_tokens)}
            done[name] = row
            print(json.dumps(row), flush=True)
        base = done["batch 1, queue N"]["answered_per_hour"]
        rows += [{**done[name], "ratio_to_batch_1": done[name]["answered_per_hour"] / base} for name, _, _ in CASES]
    notes = (f"{args.requests} simultaneous requests per case (the first {args.requests} questions of "
             f"../shared/data/questions/hotpotqa.jsonl, every other one streamed), max_tokens {args.max_tokens}, BM25 "
             f"over corpus/wiki_paragraphs.jsonl, dtype {args.dtype}, one server process (uvicorn in a thread, one "
             f"worker thread). answered_per_hour = 200 responses over the burst's wall time; latency = seconds "
             f"from sending to the last byte, answered requests only; ratio_to_batch_1 = answered_per_hour over "
             f"'batch 1, queue N' of the same method. Target (issue 17): no 503 for 20 requests at batch 8 on "
             f"the 135M model. Peak RSS {peak_rss_mb():.0f} MB.")
    write_results(result_name("serve", args.model), rows, model=args.model,
                  data={"hotpotqa": {"file": "questions/hotpotqa.jsonl", "questions": len(questions)}}, notes=notes,
                  results_dir=(CHECKPOINTS / "quick") if args.quick else None)


if __name__ == "__main__":
    main()
