"""The server under load, and one long question per preset: latency, refusals, Retry-After, memory.

Issue 27's targets. One process loads the pipeline once and measures two things:

**load** -- the real server (:func:`dynaprag.serve.app.create_app` with ``dynaprag serve``'s
defaults: batch 8, queue 32, the default limits) on loopback, warmed by a few sequential
requests, then ``--dragin`` concurrent ``dragin`` requests and ``--sr-rag`` concurrent ``sr-rag``
requests at once (distinct questions of ``../shared/data/questions/hotpotqa.jsonl``). A refused
client waits the ``Retry-After`` it was given and tries again (at most ``--attempts`` times), as a
polite client does. A thread polls ``/health`` every 0.2 s, so for each 503 the *actual* drain
time is known: from the refusal until the line that stood in front of it had drained (the
worker's completed count reached what it would be after the line then waiting and running).
Reported per method: answered, refused (503s), p50/p95 latency of the answered (from the first
attempt to the last byte); and per 503 the Retry-After, the measured drain and their ratio
(target: within 2x), split by whether the worker had measured a throughput yet.

**long** -- for each preset and each question length (``--lengths`` tokens: a real question after
corpus paragraphs that make it that long), the server's decision (its token budget and its memory
estimate against the default budget, :mod:`dynaprag.serve.budget`) and, when the memory budget
admits it, the peak RSS growth of answering it alone (the kernel's high-water mark, reset before
each case through ``/proc/self/clear_refs`` after ``malloc_trim``, so memory an earlier case freed
does not hide this one's), next to the estimate. Target: flat or bounded, never
over the estimate (the budget admits by it). Each finished long case is appended to a checkpoint
(``bench/checkpoints/serve*.long.checkpoint.jsonl``, with the commit and dtype it ran at) and the
results are rewritten after it, so a killed run loses at most the case in progress and the same
command resumes with the cases not yet measured.

    .venv/bin/python bench/serve.py --note "..."                  # both parts, every preset
    .venv/bin/python bench/serve.py --part long --presets dragin,sr-rag --lengths 1000,2000
    .venv/bin/python bench/serve.py --quick                        # smoke: small, not committed
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import sys
import threading
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CHECKPOINTS, DEFAULT_MODEL, RESULTS, SHARED_DATA, git_commit, load_questions, parse_args, resolved_dtype,
    result_name, rss_mb, write_results,
)

#: presets the long-question part skips, and why (they cannot answer on the default model/setup)
SKIPPED = {"self-rag": "needs Self-RAG's reflection tokens (not in this tokenizer)",
           "dyprag": "needs a trained translator (refused with 400 without one)",
           "dyprag-combine": "needs a trained translator (refused with 400 without one)"}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# --- load ---------------------------------------------------------------------------------------

class HealthLog:
    """``/health`` every ``interval`` s in a thread: (time, completed, waiting + running) readings."""

    def __init__(self, url: str, interval: float = 0.2):
        self.url, self.interval, self.readings = url, interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        import httpx

        with httpx.Client(timeout=60) as http:
            while not self._stop.is_set():
                q = http.get(f"{self.url}/health").json()["queue"]
                self.readings.append((time.perf_counter(), q["completed"], q["pending"] + q["running"]))
                self._stop.wait(self.interval)

    def __enter__(self) -> "HealthLog":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def drained_at(self, since: float) -> float | None:
        """When the jobs in line at ``since`` (waiting and running) had all finished."""
        before = [r for r in self.readings if r[0] <= since]
        if not before:
            return None
        _, completed, in_line = before[-1]
        return next((t for t, done, _ in self.readings if t > since and done >= completed + in_line), None)


def ask(url: str, body: dict, attempts: int, refusals: list) -> tuple[int, float]:
    """POST until answered or refused ``attempts`` times, waiting each Retry-After; (status, seconds)."""
    import httpx

    start = time.perf_counter()
    with httpx.Client(timeout=3600) as http:
        for attempt in range(attempts):
            resp = http.post(f"{url}/v1/completions", json=body)
            if resp.status_code != 503:
                return resp.status_code, time.perf_counter() - start
            retry = int(resp.headers["Retry-After"])
            refusals.append({"at": time.perf_counter(), "retry_after": retry, "method": body["dynaprag"]["method"],
                             "attempt": attempt + 1})
            if attempt + 1 < attempts:
                time.sleep(retry)
    return 503, time.perf_counter() - start


def run_load(pipeline, questions: list[str], n_dragin: int, n_srrag: int, max_tokens: int, attempts: int) -> list:
    import httpx

    from dynaprag.serve.app import create_app
    from dynaprag.serve.server import ServerThread

    with ServerThread(create_app(pipeline, batch_size=8, max_queue=32)) as server:
        model = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]
        body = lambda q, m: {"model": model, "prompt": q, "max_tokens": max_tokens, "dynaprag": {"method": m}}
        for q, m in [(questions[-1], "sr-rag"), (questions[-2], "sr-rag"), (questions[-3], "dragin")]:
            httpx.post(f"{server.url}/v1/completions", json=body(q, m), timeout=3600)  # warm: a measured rate
        bodies = ([body(q, "dragin") for q in questions[:n_dragin]]
                  + [body(q, "sr-rag") for q in questions[n_dragin:n_dragin + n_srrag]])
        refusals: list[dict] = []
        peak_reset()
        before = rss_mb()
        with HealthLog(server.url) as health, concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            start = time.perf_counter()
            measured_before = server.app.state.service.worker.drain.rate() is not None
            results = list(pool.map(lambda b: (b["dynaprag"]["method"], *ask(server.url, b, attempts, refusals)),
                                    bodies))
            seconds = time.perf_counter() - start
            time.sleep(0.5)
        stats = httpx.get(f"{server.url}/health").json()["queue"]
    peak = peak_mb()
    rows = []
    for method in ("dragin", "sr-rag"):
        answered = [s for m, code, s in results if m == method and code == 200]
        rows.append({"part": "load", "method": method, "requests": sum(m == method for m, _, _ in results),
                     "ok_200": len(answered), "refused_503": sum(r["method"] == method for r in refusals),
                     "gave_up": sum(m == method and code == 503 for m, code, _ in results),
                     "other_status": sum(m == method and code not in (200, 503) for m, code, _ in results),
                     "latency_p50_s": median(answered) if answered else float("nan"),
                     "latency_p95_s": percentile(answered, 95), "burst_seconds": seconds})
    for r in refusals:
        drained = health.drained_at(r["at"])
        actual = None if drained is None else drained - r["at"]
        rows.append({"part": "retry-after", "method": r["method"], "attempt": r["attempt"],
                     "retry_after_s": r["retry_after"], "drain_s": actual,
                     "ratio": None if not actual else r["retry_after"] / actual,
                     "within_2x": None if not actual else 0.5 <= r["retry_after"] / actual <= 2.0,
                     "rate_measured": measured_before})
    judged = [r for r in rows if r["part"] == "retry-after" and r["ratio"] is not None]
    if judged:
        ratios = sorted(r["ratio"] for r in judged)
        rows.append({"part": "load", "method": "retry-after (all 503s)", "refused_503": len(refusals),
                     "judged": len(judged), "retry_after_min_s": min(r["retry_after_s"] for r in judged),
                     "retry_after_max_s": max(r["retry_after_s"] for r in judged),
                     "drain_min_s": min(r["drain_s"] for r in judged), "drain_max_s": max(r["drain_s"] for r in judged),
                     "ratio_min": ratios[0], "ratio_median": median(ratios), "ratio_max": ratios[-1],
                     "within_2x": sum(bool(r["within_2x"]) for r in judged)})
    rows.append({"part": "load", "method": "worker", "batches": stats["batches"],
                 "largest_batch": stats["largest_batch"],
                 "joined": stats["joined"], "jobs_per_second": stats["jobs_per_second"], "rss_before_mb": before,
                 "peak_rss_mb": peak, "peak_growth_mb": peak - before})
    return rows


# --- long questions --------------------------------------------------------------------------------

def long_question(gen, paragraphs: list[str], question: str, tokens: int) -> str:
    """Corpus paragraphs, then ``question``, cut so the whole is ``tokens`` tokens."""
    tail = gen.encode("\n\n" + question)
    ids: list[int] = []
    for text in paragraphs:
        ids += gen.encode(text + "\n")
        if len(ids) >= tokens - len(tail):
            break
    return gen.decode(ids[: max(0, tokens - len(tail))] + tail)


def peak_reset() -> None:
    """Give freed heap back to the system, then set the kernel's high-water mark to the current RSS."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: the growth may then read low after a larger earlier case
        pass
    Path("/proc/self/clear_refs").write_text("5")


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def case_key(row: dict) -> tuple:
    """What identifies a long case in the checkpoint: preset, length and answer budget."""
    return row["preset"], row["length"], row.get("max_tokens")


def run_long(pipeline, presets: list[str], lengths: list[int], question: str, paragraphs: list[str],
             max_tokens: int, max_seconds: float = float("inf"), done: dict | None = None,
             record=lambda row: None) -> list:
    """One row per preset and length; a case in ``done`` (by :func:`case_key`) is not run again but
    its recorded row is returned, and ``record(row)`` is called after each case measured here."""
    from dynaprag.serve.app import Limits, Service
    from dynaprag.serve.errors import ApiError
    from dynaprag.serve.worker import Worker

    default = Limits()
    service = Service(pipeline, Worker(), Limits(max_request_tokens=10**9, memory_budget_mb=10**9), "bench")
    server = Service(pipeline, Worker(), default, "bench")  # what `dynaprag serve`'s defaults answer
    rows = [{"part": "long", "preset": p, "length": n, "skipped": SKIPPED[p]} for n in lengths for p in presets
            if p in SKIPPED]
    deadline = time.monotonic() + max_seconds
    for tokens in lengths:  # every preset at one length before the next: a time budget cuts the longest
        text = long_question(pipeline.generator, paragraphs, question, tokens)
        for preset in (p for p in presets if p not in SKIPPED):
            if (preset, tokens, max_tokens) in (done or {}):
                rows.append(done[(preset, tokens, max_tokens)])
                continue
            options = {"injector.on_missing": "context"} if preset.startswith("prag") else {}
            resolved = pipeline.method(preset, options)
            if time.monotonic() > deadline:
                rows.append({"part": "long", "preset": preset, "length": tokens,
                             "skipped": f"not run: the run's --max-seconds {max_seconds:.0f} had passed"})
                continue
            estimate = service.cost(text, resolved, max_tokens, "prompt")
            try:
                server.cost(text, resolved, max_tokens, "prompt")
                decision = "admitted"
            except ApiError as exc:
                decision = f"{exc.status} {exc.code}"
            row = {"part": "long", "preset": preset, "length": tokens, "max_tokens": max_tokens,
                   "question_tokens": len(pipeline.generator.encode(text)),
                   "estimate_mb": estimate / 2**20, "server": decision}
            if estimate > default.memory_budget_mb << 20:
                rows.append({**row, "skipped": "over the default memory budget: refused before decoding"})
                print(json.dumps(rows[-1]), flush=True)
                record(rows[-1])
                continue
            peak_reset()
            before = rss_mb()
            start = time.perf_counter()
            try:
                answer = pipeline.answer(text, method=preset, options=options, max_new_tokens=max_tokens)
                row["prompt_tokens"] = answer.trace.prompt_tokens
                row["retrievals"] = len(answer.trace.retrievals)
            except (ValueError, ApiError) as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"[:160]
            peak = peak_mb()
            row.update(seconds=time.perf_counter() - start, rss_before_mb=before, peak_rss_mb=peak,
                       peak_growth_mb=peak - before)
            row["within_estimate"] = row["peak_growth_mb"] <= row["estimate_mb"]
            rows.append(row)
            print(json.dumps(row), flush=True)
            record(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--part", choices=("load", "long", "both"), default="both")
    ap.add_argument("--dragin", type=int, default=20, help="concurrent dragin requests")
    ap.add_argument("--sr-rag", type=int, default=40, help="concurrent sr-rag requests")
    ap.add_argument("--attempts", type=int, default=3, help="tries per client (waiting Retry-After between)")
    ap.add_argument("--max-tokens", type=int, default=32, help="max_tokens of every load request")
    ap.add_argument("--presets", default="", help="long part: comma-separated presets (default: every one)")
    ap.add_argument("--lengths", default="1000,2000,4000,8000", help="long part: question lengths in tokens")
    ap.add_argument("--long-max-tokens", type=int, default=8, help="long part: answer budget")
    ap.add_argument("--max-seconds", type=float, default=float("inf"),
                    help="long part: start no case after this many seconds (the rest are listed as not run)")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--quick", action="store_true", help="2 + 4 requests, 2 presets at 500 tokens; not committed")
    args = parse_args(ap)
    if args.quick:
        args.dragin, args.sr_rag, args.presets, args.lengths = 2, 4, "sr-rag,dragin", "500"
    if not (SHARED_DATA / "questions").is_dir():
        sys.exit(f"evaluation data not found at {SHARED_DATA}")
    from dynaprag.pipeline import Pipeline, PipelineConfig, method_names
    from dynaprag.retrieval import RetrieverConfig

    corpus = SHARED_DATA / "corpus" / "wiki_paragraphs.jsonl"
    n = args.dragin + args.sr_rag + 3
    questions = [q["question"] for q in load_questions("hotpotqa", n)]
    pipeline = Pipeline.from_config(PipelineConfig(model=args.model, dtype=args.dtype,
                                                   retrieval=RetrieverConfig(corpus=str(corpus))))
    pipeline.answer(questions[0], method="sr-rag", max_new_tokens=4)  # index pages, kernels: not measured
    name = result_name("serve", args.model)
    results_dir = (CHECKPOINTS / "quick") if args.quick else None
    rows: list[dict] = []
    partial = args.part != "both" or bool(args.presets) or args.lengths != ap.get_default("lengths")

    def write(rows: list[dict]) -> None:
        table = merged(rows, (results_dir or RESULTS) / f"{name}.json", args.part) if partial else rows
        write_results(name, table, model=args.model, dtype=resolved_dtype(args.dtype), notes=notes(args, partial),
                      data={"hotpotqa": {"file": "questions/hotpotqa.jsonl", "questions": len(questions)}},
                      group_by="part", results_dir=results_dir)

    if args.part in ("load", "both"):
        rows += run_load(pipeline, questions, args.dragin, args.sr_rag, args.max_tokens, args.attempts)
        for row in rows:
            print(json.dumps(row), flush=True)
    if args.part in ("long", "both"):
        from dynaprag.jsonl_log import append_jsonl, read_jsonl

        paragraphs = []
        with corpus.open(encoding="utf-8") as f:
            for line in f:
                paragraphs.append(json.loads(line)["text"])
                if len(paragraphs) >= 400:
                    break
        presets = [p for p in (args.presets.split(",") if args.presets else method_names()) if p]
        lengths = [int(x) for x in args.lengths.split(",")]
        ckpt = (results_dir or CHECKPOINTS) / f"{name}.long.checkpoint.jsonl"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        # a torn last line is dropped; a smoke run (--quick) always measures afresh
        done = {} if args.quick else {case_key(r): r for r in read_jsonl(ckpt, repair=True)}
        stamp = {"git_commit": git_commit(), "dtype": resolved_dtype(args.dtype)}
        measured = rows + [r for r in done.values() if r["preset"] in presets and r["length"] in lengths
                           and r.get("max_tokens") == args.long_max_tokens]
        with ckpt.open("ab") as out:
            def record(row: dict) -> None:
                row.update(stamp)
                append_jsonl(out, row)
                measured.append(row)
                write(measured)  # the table so far: a kill keeps what finished

            rows += run_long(pipeline, presets, lengths, questions[0], paragraphs, args.long_max_tokens,
                             args.max_seconds, done=done, record=record)
    write(rows)


def notes(args, partial: bool) -> str:
    return (f"load: the server at dynaprag serve's defaults (batch 8, queue 32, default limits), warmed by 3 "
            f"sequential requests, then {args.dragin} dragin + {args.sr_rag} sr-rag requests at once (distinct "
            f"hotpotqa questions, max_tokens {args.max_tokens}); a refused client waits its Retry-After and tries "
            f"again, at most {args.attempts} times. drain_s = from a 503 until the jobs then waiting and running had "
            f"finished (/health polled every 0.2 s); ratio = Retry-After / drain_s. long: one request at a time "
            f"through the pipeline (answer budget {args.long_max_tokens}); question = corpus paragraphs + a hotpotqa "
            f"question, cut to the length; server = what dynaprag serve's defaults (4096 tokens per request, "
            f"8192 MiB budget) answer; peak_growth_mb = the kernel's peak RSS (reset per case after malloc_trim) "
            f"minus RSS before, peak_rss_mb the peak itself (model and index included); "
            f"estimate_mb = dynaprag.serve.budget's estimate; a long row's git_commit and dtype are those it ran at "
            f"(cases resume from a checkpoint). BM25 over corpus/wiki_paragraphs.jsonl."
            + (" Rows come from partial runs (--part, --presets, --lengths); each run's command is in its log, and "
               "this file's header names the last one." if partial else ""))


def merged(rows: list[dict], old: Path, part: str) -> list[dict]:
    """``rows`` and the rows of the results file ``old`` that they do not replace: a partial run
    replaces only its own rows (a part; long cases by preset and length), so partial runs (in
    parallel processes, too) add up to the whole table."""

    def key(row: dict):
        return (row.get("part"), row.get("preset"), row.get("length")) if row.get("part") == "long" else (
            "load" if row.get("part") in ("load", "retry-after") else row.get("part"))
    kept = json.loads(old.read_text())["rows"] if old.is_file() else []
    mine = {key(r) for r in rows} | ({"load"} if part in ("load", "both") else set())
    return [r for r in kept if r.get("part") is not None and key(r) not in mine] + rows


if __name__ == "__main__":
    from dynaprag.jsonl_log import CorruptLogError

    try:
        main()
    except CorruptLogError as exc:  # a checkpoint line other than the last is bad: one line, exit code 2
        raise SystemExit(print(f"error: {exc}", file=sys.stderr) or 2)
