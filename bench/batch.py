"""Batched dynamic decoding: questions per hour at batch 1, 4, 8, 16 for the same methods in one run.

Each case is (method, dataset, batch size): the first N questions of ``../shared/data``
HotpotQA or 2WikiMultihopQA (BM25 over the pooled Wikipedia paragraphs, the preset's
per-dataset settings) answered through :meth:`dynaprag.pipeline.Pipeline.answer_many`, timed as
a whole (N questions over the wall time, including retrieval, re-prefill and the tail where the
last questions decode alone). ``ratio_to_batch_1`` divides a case's questions per hour by batch
1's for the same method and dataset *in the same process*; ``same_answer_as_batch_1`` is the
share of answers whose text equals batch 1's (1.0 in float32 up to near ties; in bfloat16 the
batched pass rounds differently and greedy text may drift, which this column shows).

Batch sizes run in alternating order per method (1, 4, 8, 16, then the next method reversed),
so slow drift of the machine does not favour one size. Cases are appended to a checkpoint as
they finish; a rerun skips the finished ones (a kill loses at most the case in progress), and a
run in another process contributes its cases but ratios only pair cases of the same process.
``--restack always`` adds rows with the batch cache re-stacked every step instead of reused
while membership is stable (the two strategies of :mod:`dynaprag.lm.batch`).

Memory: each case samples the process's resident memory while it runs (:class:`RssPeak`);
``peak_rss_mb`` is the highest RSS (model weights included) and ``peak_rss_growth_mb`` the peak
above the RSS at the case's start, i.e. what the batch's caches and activations cost. Run with
``MALLOC_MMAP_THRESHOLD_=65536`` so memory freed after one case is returned before the next.

Weight-changing methods (prag: every question loads its own adapters, so
:class:`~dynaprag.dynamic.batch.BatchLoop` runs them one at a time whatever the batch size) run
only when named in ``--methods``: their adapters must be encoded first, and the 135M model writes
no parsable PRAG augmentation. They are measured at batch 1 and 8 only, on the first
``--grouped-n`` questions, after an untimed batch-1 pass over the same questions that encodes
their documents' adapters into the store (``$DYNAPRAG_ADAPTERS``): the timed cases measure
answering, not the offline encoding.

    .venv/bin/python bench/batch.py --quick      # 135M, 4 questions, sr-rag and dragin at 1 and 4
    .venv/bin/python bench/batch.py --model qwen2.5-coder-0.5b --n 16 --datasets hotpotqa --threads 1
    .venv/bin/python bench/batch.py --model qwen2.5-coder-0.5b --n 16 --datasets hotpotqa --threads 1 --methods prag
    .venv/bin/python bench/batch.py --model qwen2.5-coder-0.5b --methods sr-rag --batch-sizes 8 --restack always
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CHECKPOINTS, DEFAULT_MODEL, SHARED_DATA, RssPeak, git_commit, load_questions, parse_args, peak_rss_mb,
    resolved_dtype, result_name, write_results,
)

DATASETS = ("hotpotqa", "2wikimultihopqa")
METHODS = ("sr-rag", "fs-rag", "flare", "dragin")  # prag on request: --methods ...,prag (it needs adapters)


def run_case(pipe, method: str, dataset: str, questions: list[dict], batch: int, restack: str) -> dict:
    """Answer ``questions`` at batch size ``batch``; the case's timing, costs and answer texts."""
    import dataclasses

    from dynaprag.dynamic.batch import BatchLoop

    pipe.config = dataclasses.replace(pipe.config, dataset=dataset)
    loop = BatchLoop(pipe.loop(method), batch_size=batch, restack=restack)
    texts: list[str] = [""] * len(questions)
    traces = []
    with RssPeak() as memory:
        t0, cpu0 = time.perf_counter(), time.process_time()
        for index, answer in loop.answers([q["question"] for q in questions]):
            if isinstance(answer, Exception):
                raise answer
            texts[index] = answer.text
            traces.append(answer.trace)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    stepper = loop.stepper
    return {"method": method, "dataset": dataset, "batch_size": batch, "restack": restack,
            "effective_batch_size": loop.batch_size, "n": len(questions), "seconds": seconds,
            "cpu_seconds": cpu_seconds, "load_avg_1m": os.getloadavg()[0],
            "generated_tokens": sum(t.generated_tokens for t in traces),
            "prompt_tokens": sum(t.prompt_tokens for t in traces),
            "retrievals": sum(len(t.retrievals) for t in traces),
            "batched_passes": stepper.batched_passes, "rows_in_batched_passes": stepper.rows_stepped,
            "restacks": stepper.restacks, "feed_failures": loop.feed_failures,
            "rss_before_mb": memory.before_mb, "peak_rss_mb": memory.peak_mb, "peak_rss_growth_mb": memory.growth_mb,
            "texts": texts, "ids": [q["id"] for q in questions]}


def measure_steps(pipe, sizes: list[int], context: int, steps: int, rounds: int = 3) -> list[dict]:
    """Decode-step cost of the two cache strategies and of batch 1, alternating, on ``context``-token prompts.

    Prompts of slightly different lengths (left padding is exercised); per size, ``rounds`` rounds
    of: batch-1 steps of every sequence in turn, batched steps reusing the padded cache, batched
    steps re-stacking every step. Reports ms per step and decoded tokens per second (medians).
    """
    from statistics import median

    from dynaprag.lm.batch import BatchStepper
    from dynaprag.lm.generator import GenerationConfig

    gen = pipe.generator
    words = ("The history of the river valley includes many towns, bridges and old trade routes. " * 80).split()
    cfg = GenerationConfig(max_new_tokens=1)
    rows = []
    for size in sizes:
        times: dict[str, list[float]] = {"batch 1": [], "on-change": [], "always": []}
        prefilled = []
        for b in range(size):
            state = gen.start(gen.encode(" ".join(words[: context + 7 * b]))[: context + 3 * b])
            gen.next_logprobs(state)  # prefill alone, as a joining question
            prefilled.append(state)
        for _ in range(rounds):
            for mode in times:
                states = copy.deepcopy(prefilled)
                stepper = BatchStepper(gen, restack="on-change" if mode == "batch 1" else mode)
                stepper.step(states, cfg)  # warm-up step (first stack)
                t0 = time.perf_counter()
                for _ in range(steps):
                    if mode == "batch 1":
                        for state in states:
                            gen.step(state, cfg)
                    else:
                        stepper.step(states, cfg)
                times[mode].append((time.perf_counter() - t0) / steps)
        for mode, ts in times.items():
            t = median(ts)
            rows.append({"kind": "decode step", "case": mode, "batch_size": size, "context_tokens": context,
                         "ms_per_step": 1000 * t, "tokens_per_s": size / t,
                         "ratio_to_batch_1": median(times["batch 1"]) / t})
    return rows


def _largest(cases: list[dict], key: str) -> float:
    """The largest ``key`` over the cases that recorded it (older checkpoints did not); NaN if none."""
    values = [c[key] for c in cases if key in c]
    return max(values) if values else float("nan")


def _joined(cases: list[dict], key: str) -> str:
    """The distinct values of ``key`` over the cases (``"unknown"`` where a case lacks it), ``+``-joined."""
    return "+".join(sorted({str(c.get(key, "unknown")) for c in cases}))


def _cpu_ratio(paired: list[tuple[dict, dict]]) -> float:
    """Batch 1's CPU seconds per question over this size's: with one torch thread, the process's CPU
    time is the work itself, which other jobs on the machine stretch far less than the wall time."""
    paired = [(c, b1) for c, b1 in paired if "cpu_seconds" in c and "cpu_seconds" in b1]
    if not paired:
        return float("nan")  # cases from before CPU time was recorded
    return sum(b1["cpu_seconds"] / b1["n"] for _, b1 in paired) / sum(c["cpu_seconds"] / c["n"] for c, _ in paired)


def rows_of(cases: list[dict]) -> list[dict]:
    """One row per (method, restack, batch size) over both datasets, ratios against batch 1 of the
    same process and dataset (a case without its batch-1 partner has no ratio)."""
    base = {(c["method"], c["dataset"], c["run"]): c for c in cases if c["batch_size"] == 1}
    rows = []
    keys = sorted({(c["method"], c["restack"], c["batch_size"]) for c in cases},
                  key=lambda k: (METHODS.index(k[0]) if k[0] in METHODS else 99, k[0], k[1] != "on-change", k[2]))
    for method, restack, batch in keys:
        latest = {c["dataset"]: c for c in cases if (c["method"], c["restack"], c["batch_size"]) == (method, restack, batch)}
        group = list(latest.values())  # the latest measurement of each dataset
        paired = [(c, base[(method, c["dataset"], c["run"])]) for c in group if (method, c["dataset"], c["run"]) in base]
        n, seconds = sum(c["n"] for c in group), sum(c["seconds"] for c in group)
        same = [a == b for c, b1 in paired for a, b in zip(c["texts"], b1["texts"])]
        rows.append({
            "method": method, "batch_size": batch, "restack": restack,
            "effective_batch_size": max(c["effective_batch_size"] for c in group),
            "datasets": "+".join(sorted({c["dataset"] for c in group})), "n": n,
            "questions_per_hour": 3600 * n / seconds, "s_per_question": seconds / n,
            "generated_tokens_per_s": sum(c["generated_tokens"] for c in group) / seconds,
            "retrievals_per_question": sum(c["retrievals"] for c in group) / n,
            "mean_rows_per_batched_pass": (sum(c["rows_in_batched_passes"] for c in group)
                                           / max(1, sum(c["batched_passes"] for c in group))),
            "ratio_to_batch_1": (sum(b1["seconds"] / b1["n"] for _, b1 in paired)
                                 / sum(c["seconds"] / c["n"] for c, _ in paired)) if paired else float("nan"),
            "cpu_ratio_to_batch_1": _cpu_ratio(paired),
            "load_avg_1m": _largest(group, "load_avg_1m"),
            "same_answer_as_batch_1": sum(same) / len(same) if same else float("nan"),
            "failed_batched_feeds": sum(c.get("feed_failures", 0) for c in group),
            "peak_rss_mb": _largest(group, "peak_rss_mb"),
            "peak_rss_growth_mb": _largest(group, "peak_rss_growth_mb"),
            "dtype": _joined(group, "dtype"), "git_commit": _joined(group, "git_commit"),
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=24, help="questions per dataset and case")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated presets (prag runs one at a time)")
    ap.add_argument("--grouped-n", type=int, default=2,
                    help="questions per dataset for weight-changing methods (prag), measured at batch 1 and 8")
    ap.add_argument("--batch-sizes", default="1,4,8,16")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--restack", default="on-change", choices=("on-change", "always"),
                    help="batch cache strategy of the measured cases (batch 1 is always plain)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--name", default="batch")
    ap.add_argument("--steps", type=int, default=24,
                    help="decode steps per size in the cache-strategy measurement (0 = skip it)")
    ap.add_argument("--step-context", type=int, default=400, help="prompt tokens in the cache-strategy measurement")
    ap.add_argument("--quick", action="store_true", help="135M model, 4 questions of HotpotQA, sr-rag and dragin at 1 and 4")
    args = parse_args(ap)
    if not (SHARED_DATA / "questions").is_dir():
        sys.exit(f"evaluation data not found at {SHARED_DATA}")
    if args.quick:
        args.n, args.methods, args.batch_sizes, args.datasets = 4, "sr-rag,dragin", "1,4", "hotpotqa"
        args.model, args.name, args.steps, args.step_context = DEFAULT_MODEL, f"{args.name}.quick", 4, 100
    methods = [m for m in args.methods.split(",") if m]
    sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    if 1 not in sizes:
        sizes.insert(0, 1)  # every ratio needs batch 1 of the same run
    datasets = [d for d in args.datasets.split(",") if d]
    questions = {ds: load_questions(ds, args.n) for ds in datasets}
    table = result_name(args.name, args.model)
    ckpt = CHECKPOINTS / f"{table}.checkpoint.jsonl"
    from dynaprag.jsonl_log import append_jsonl, read_jsonl

    cases = read_jsonl(ckpt, repair=True)  # a line cut by a kill is dropped and cut off before appending
    done = {(c["method"], c["dataset"], c["batch_size"], c["restack"], c["n"]) for c in cases if "method" in c}

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from dynaprag.config import to_dict
    from dynaprag.dynamic.batch import BatchLoop
    from dynaprag.pipeline import Pipeline, PipelineConfig
    from dynaprag.retrieval import RetrieverConfig

    config = PipelineConfig(model=args.model, dtype=args.dtype, max_new_tokens=args.max_new_tokens,
                            retrieval=RetrieverConfig(corpus=str(SHARED_DATA / "corpus" / "wiki_paragraphs.jsonl")))
    pipe = None
    run = f"{os.uname().nodename}-{os.getpid()}-{int(time.time())}"
    stamp = {"run": run, "git_commit": git_commit(), "dtype": resolved_dtype(args.dtype)}
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    with ckpt.open("ab") as out:
        want = {"sizes": sizes, "context": args.step_context, "steps": args.steps}
        if args.steps and not any(c.get("kind") == "steps" and c["settings"] == want for c in cases):
            pipe = Pipeline.from_config(config)
            record = {"kind": "steps", "settings": want, **stamp,
                      "rows": measure_steps(pipe, sizes, args.step_context, args.steps)}
            append_jsonl(out, record)
            cases.append(record)
            print(f"decode steps measured: {record['rows']}", flush=True)
        warm = False
        for m_i, method in enumerate(methods):
            order = sizes if m_i % 2 == 0 else [1] + sorted((b for b in sizes if b != 1), reverse=True)
            if pipe is None:
                pipe = Pipeline.from_config(config)
            grouped = BatchLoop(pipe.loop(method)).grouped
            if grouped:  # one question at a time whatever the size: batch 1 and 8 show it
                order = [1, 8 if 8 in sizes else max(sizes)] if max(sizes) > 1 else [1]
            for ds in datasets:
                qs = questions[ds][:args.grouped_n] if grouped else questions[ds]
                key = lambda b: (method, ds, b, "on-change" if b == 1 else args.restack, len(qs))  # noqa: E731
                pending = [b for b in order if key(b) not in done]
                if pending and 1 not in pending:
                    pending.insert(0, 1)  # ratios pair cases of the same process: measure batch 1 again
                if pending and grouped:  # encode the questions' adapters first, untimed
                    prep = run_case(pipe, method, ds, qs, 1, "on-change")
                    print(f"{method} {ds}: prepared {len(qs)} questions in {prep['seconds']:.1f}s (untimed)", flush=True)
                for batch in pending:
                    restack = "on-change" if batch == 1 else args.restack
                    if not warm:  # index pages, prefix cache, kernels: not part of the first case's time
                        run_case(pipe, method, ds, qs[:1], 1, "on-change")
                        warm = True
                    case = run_case(pipe, method, ds, qs, batch, restack)
                    case.update(stamp)
                    append_jsonl(out, case)
                    cases.append(case)
                    done.add(key(batch))
                    print(f"{method} {ds} batch {batch} ({restack}): {case['n']} questions in {case['seconds']:.1f}s "
                          f"= {3600 * case['n'] / case['seconds']:.0f} q/h", flush=True)
                    _write(table, cases, args, config, to_dict, questions)
    _write(table, cases, args, config, to_dict, questions)


def _write(table, cases, args, config, to_dict, questions) -> None:
    rows = [{"kind": "questions", **r} for r in rows_of([c for c in cases if "method" in c])]
    steps = [c for c in cases if c.get("kind") == "steps"]
    targets = [f"{r['method']} {r['ratio_to_batch_1']:.2f}x at batch 8" for r in rows
               if r["batch_size"] == 8 and r["method"] in ("sr-rag", "dragin") and r["restack"] == "on-change"]
    notes = (f"Questions: the first {args.n} of ../shared/data/questions/{{{','.join(questions)}}}.jsonl per case; "
             f"BM25 over corpus/wiki_paragraphs.jsonl, k=3, max_new_tokens={args.max_new_tokens}, greedy, dtype "
             f"{resolved_dtype(args.dtype)} (each row's dtype and git_commit: those of the processes that measured "
             f"it). questions_per_hour = questions over the case's wall time (retrieval, re-prefill and the "
             f"tail included). ratio_to_batch_1 = batch 1's s/question over this size's, same method, dataset and "
             f"process; cpu_ratio_to_batch_1 = the same with the process's CPU seconds (one torch thread: the "
             f"work itself, which other load stretches far less than wall time; blank for cases measured before it "
             f"was recorded); load_avg_1m = the highest 1-minute load average at a case's end. "
             f"same_answer_as_batch_1 = share of answer texts equal to batch 1's. Methods whose injector "
             f"changes weights run one question at a time (effective_batch_size 1); they are measured at batch 1 and "
             f"8 on the first {args.grouped_n} questions per dataset, after an untimed pass that encodes their "
             f"adapters. peak_rss_mb = highest resident memory during the case (weights included); "
             f"peak_rss_growth_mb = that peak above the RSS at the case's start. Target (issue 17): >= 2.5x at "
             f"batch 8 for sr-rag and dragin on qwen2.5-coder-0.5b; here: {'; '.join(targets) or 'not measured'}. "
             f"Peak RSS {peak_rss_mb():.0f} MB.")
    step_rows = [{**r, "dtype": steps[-1].get("dtype", "unknown"), "git_commit": steps[-1].get("git_commit", "unknown")}
                 for r in (steps[-1]["rows"] if steps else [])]
    write_results(table, rows + step_rows, model=args.model,
                  data={ds: {"file": f"questions/{ds}.jsonl", "questions": len(qs)} for ds, qs in questions.items()},
                  notes=notes + _steps_note(steps[-1]["rows"] if steps else []), extra={"config": to_dict(config)},
                  dtype=resolved_dtype(args.dtype),
                  group_by="kind",
                  results_dir=(CHECKPOINTS / "quick") if args.quick else None)


def _steps_note(rows: list[dict]) -> str:
    """Which cache strategy was faster per batch size (the 'decode step' rows)."""
    if not rows:
        return ""
    parts = []
    for size in sorted({r["batch_size"] for r in rows if r["batch_size"] > 1}):
        by = {r["case"]: r["ms_per_step"] for r in rows if r["batch_size"] == size}
        parts.append(f"batch {size}: reuse {by['on-change']:.0f} ms, re-stack every step {by['always']:.0f} ms")
    return (" Decode step (left-padded batch, per-sequence caches): the padded cache reused while membership is "
            "stable vs re-stacked every step; " + "; ".join(parts) + ".")


if __name__ == "__main__":
    from dynaprag.jsonl_log import CorruptLogError

    try:
        main()
    except CorruptLogError as exc:  # a checkpoint line other than the last is bad: one line, exit code 2
        raise SystemExit(print(f"error: {exc}", file=sys.stderr) or 2)
