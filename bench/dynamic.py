"""Every dynamic RAG method on the same questions: quality, retrieval counts, cost and time.

Runs each method of :data:`dynaprag.dynamic.methods.METHODS` (those that run on an ordinary
instruct model) on the first N questions of ``../shared/data`` HotpotQA and 2WikiMultihopQA with
BM25 over the pooled Wikipedia paragraphs, and writes ``bench/results/dynamic.{json,md}``: EM,
F1, retrievals/question, forward passes/question, tokens/question, s/question and s/question
divided by sr-rag's on the same questions of the same run.

Questions run question-major (every method on question 1, then question 2, ...) and each
(method, dataset, question) is appended to a checkpoint as it finishes, so a kill loses at most
one answer and a cut run still compares methods on the same questions: each row aggregates the
questions that its method and sr-rag both finished (column ``n``). Each record names the process
(run) that measured it, and ``ratio_to_sr_rag`` only compares an answer's time with sr-rag's
time on the same question *in the same run*: a process re-runs sr-rag on any question where it
answers a method. So a method added later, or a slow one run in other processes (``--methods
seakr --checkpoint other.jsonl --no-tables``, with ``--start 25`` in another process to split
its questions), is still timed side by side; ``--aggregate --checkpoint a.jsonl,b.jsonl``
rewrites the tables from all checkpoints. A method may carry option overrides,
``dragin@theta=0.05``: it is run and reported under that label. Without ``--methods`` the list
runs every preset that works on an instruct model (a calibrated θ is a labelled row,
``dragin@trigger.theta=...``, from ``dynaprag calibrate``). Presets get their per-dataset
reference settings (DRAGIN's θ, look-ahead, query length). Another ``--model`` writes
``dynamic.<model>.*`` and its own checkpoint: the quality comparison on a 0.5B model sits beside
the default model's speed table instead of replacing it.

    .venv/bin/python bench/dynamic.py            # N=50 per dataset, resumes from the checkpoint
    .venv/bin/python bench/dynamic.py --quick    # 2 questions per dataset, 3 methods
    .venv/bin/python bench/dynamic.py --model qwen2.5-coder-0.5b --n 25 --methods wo-rag,sr-rag,flare,dragin
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CHECKPOINTS, DEFAULT_MODEL, SHARED_DATA, git_commit, load_questions, parse_args, resolved_dtype, result_name,
    write_results,
)

DATASETS = ("hotpotqa", "2wikimultihopqa")
SKIP = {"self-rag": "needs a model trained with Self-RAG reflection tokens (the default model has none)"}
KEYS = ("method", "dataset", "id")  # what identifies a checkpoint record


def split_label(label: str) -> tuple[str, dict[str, str]]:
    """``"dragin@theta=0.05"`` -> ``("dragin", {"theta": "0.05"})``: a preset plus option overrides.

    A row name may prefix it, ``"dragin-calibrated:dragin@trigger.theta=4.7"``: see :func:`row_name`.
    """
    from dynaprag.config import parse_overrides

    name, *pairs = label.split(":", 1)[-1].split("@")
    return name, parse_overrides(pairs)


def row_name(label: str) -> str:
    """The table row of a method label: the name before ``:`` when given (so per-dataset settings,
    e.g. a θ calibrated per dataset in two processes, share one row), else the label itself."""
    head = label.split("@")[0]
    return head.split(":", 1)[0] if ":" in head else label


def score(rec: dict) -> dict:
    """EM, F1 and cover EM of a checkpointed answer, re-read at aggregation time so a fix to the shared
    answer extraction re-scores old runs consistently. The scored short answer is the one answer
    extraction's (``dynaprag.lm.extraction``: the text after "So the answer is", forced by a short
    continuation when the answer lacks it); ``f1_unforced`` scores the answer's own first line instead."""
    from dynaprag.eval.metrics import cover_exact_match, exact_match, f1
    from dynaprag.lm.prompts import extract_answer

    extraction = rec.get("extraction") or {}
    raw = extract_answer(rec["text"])
    short = extract_answer(extraction["text"]) if extraction else raw
    return {**rec, "short": short, "em": exact_match(short, rec["answers"]), "f1": f1(short, rec["answers"]),
            "cover_em": cover_exact_match(short, rec["answers"]), "f1_unforced": f1(raw, rec["answers"]),
            "forced": bool(extraction.get("forced", False)), "extracted": bool(extraction)}


def with_extraction(pipe, question: str, rec: dict) -> dict:
    """``rec`` with the one answer extraction applied and its cost added (for records written before it)."""
    from dynaprag.trace import Answer, Trace

    ans = pipe.extract(question, Answer(text=rec["text"], short="", trace=Trace()))
    ex = ans.trace.extraction
    return {**rec, "extraction": ex, "short": ans.short, "seconds": rec["seconds"] + ex["seconds"],
            "forward_passes": rec["forward_passes"] + ex["forward_passes"],
            "generated_tokens": rec["generated_tokens"] + ex["generated_tokens"],
            "prompt_tokens": rec["prompt_tokens"] + ex["prompt_tokens"], "extraction_backfilled": True}


def backfill(paths: list[Path], pipe, questions: dict[str, list[dict]]) -> None:
    """Add the answer extraction to every checkpoint record without it, rewriting each file atomically.

    The extraction's seconds are measured now, in this process, and added to the record's time, so
    ratios to sr-rag stay comparable when sr-rag's records are backfilled alike.
    """
    from dynaprag.files import atomic_write_text
    from dynaprag.jsonl_log import read_jsonl

    by_id = {(ds, q["id"]): q["question"] for ds, qs in questions.items() for q in qs}
    for path in paths:
        if not path.exists():
            continue
        lines, changed = [], 0
        for rec in read_jsonl(path, require=KEYS):  # a line cut by a kill is dropped
            key = (rec["dataset"], rec["id"])
            if "extraction" not in rec and key in by_id:
                rec = with_extraction(pipe, by_id[key], rec)
                changed += 1
                if changed % 20 == 0:
                    print(f"{path.name}: {changed} records given the answer extraction", flush=True)
            lines.append(json.dumps(rec))
        atomic_write_text(path, "".join(line + "\n" for line in lines))
        print(f"{path}: {changed} records given the answer extraction", flush=True)


def read_checkpoint(path: Path, done: dict[tuple, dict], sr_seconds: dict[tuple, float], *,
                    repair: bool = False) -> None:
    """Add a checkpoint's answers to ``done`` (first record of a key wins; sr-rag is deterministic)
    and every sr-rag timing to ``sr_seconds`` keyed by (dataset, id, run).

    A line cut by a kill is dropped (``repair``: cut off the file, for the process that appends
    to it); a bad line before the last stops the run (:func:`dynaprag.jsonl_log.read_jsonl`).
    """
    from dynaprag.jsonl_log import read_jsonl

    for rec in read_jsonl(path, repair=repair, require=KEYS):
        rec.setdefault("run", "legacy")  # records written before runs were named
        done.setdefault((rec["method"], rec["dataset"], rec["id"]), score(rec))
        if rec["method"] == "sr-rag":
            sr_seconds.setdefault((rec["dataset"], rec["id"], rec["run"]), rec["seconds"])


def aggregate(done: dict[tuple, dict], sr_seconds: dict[tuple, float], methods: list[str],
              questions: dict[str, list[dict]]) -> list[dict]:
    from statistics import mean

    rows = []
    for ds, qs in questions.items():
        for m in methods:
            common = [q["id"] for q in qs if (m, ds, q["id"]) in done and ("sr-rag", ds, q["id"]) in done]
            if not common:
                continue
            recs = [done[(m, ds, i)] for i in common]
            timed = [(r["seconds"], sr_seconds[(ds, r["id"], r["run"])]) for r in recs
                     if (ds, r["id"], r["run"]) in sr_seconds]
            s = mean(r["seconds"] for r in recs)
            rows.append({
                "method": m, "dataset": ds, "n": len(recs),
                "em": mean(r["em"] for r in recs), "f1": mean(r["f1"] for r in recs),
                "cover_em": mean(r["cover_em"] for r in recs),
                "forced_answer_share": mean(r["forced"] for r in recs),
                "f1_unforced": mean(r["f1_unforced"] for r in recs),
                "retrievals_per_question": mean(r["retrievals"] for r in recs),
                "forward_passes_per_question": mean(r["forward_passes"] for r in recs),
                "generated_tokens_per_question": mean(r["generated_tokens"] for r in recs),
                "prompt_tokens_per_question": mean(r["prompt_tokens"] for r in recs),
                "s_per_question": s,
                "ratio_to_sr_rag": (sum(t for t, _ in timed) / sum(b for _, b in timed)) if timed else float("nan"),
                "n_timed_with_sr_rag": len(timed),
                "sr_rag_f1_same_questions": mean(done[("sr-rag", ds, i)]["f1"] for i in common),
                **paired_with_sr_rag(done, m, ds, common),
                # records written before these were stamped say "unknown"
                "dtype": "+".join(sorted({r.get("dtype", "unknown") for r in recs})),
                "git_commit": "+".join(sorted({r.get("git_commit", "unknown") for r in recs})),
            })
    return rows


def paired_with_sr_rag(done: dict[tuple, dict], method: str, ds: str, common: list[str]) -> dict:
    """F1 and EM against sr-rag on the same questions: paired 95 % bootstrap interval, randomisation p-value."""
    from dynaprag.eval.stats import paired_comparison

    out = {}
    for metric in ("f1", "em"):
        ours = [done[(method, ds, i)][metric] for i in common]
        base = [done[("sr-rag", ds, i)][metric] for i in common]
        out.update(paired_comparison(ours, base).as_row(f"{metric}_"))
    return out


def summary(rows: list[dict]) -> str:
    lines = []
    for ds in DATASETS:
        sr = next((r for r in rows if r["dataset"] == ds and r["method"] == "sr-rag"), None)
        if sr is None:
            continue
        above = [r for r in rows if r["dataset"] == ds and r["method"] != "sr-rag"
                 and r["f1"] > r["sr_rag_f1_same_questions"]]
        beyond = [f"{r['method']} (n={r['n']})" for r in above if not r.get("f1_within_noise", True)]
        lines.append(f"{ds}: {len(above)} methods have a higher F1 than sr-rag on the same questions; "
                     f"beyond noise (paired 95% interval excludes 0 and p < 0.05): "
                     f"{', '.join(beyond) if beyond else 'none'}.")
    return " ".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="questions per dataset")
    ap.add_argument("--methods", default="", help="comma-separated methods (default: all that run here)")
    ap.add_argument("--start", type=int, default=0,
                    help="first question index this process answers (split a slow method over processes)")
    ap.add_argument("--max-new-tokens", type=int, default=128,
                    help="answer budget; >= DRAGIN's look-ahead (100 on HotpotQA) so its stop rule decides")
    ap.add_argument("--name", default="dynamic", help="results bench/results/NAME[.model].* and its checkpoint")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--checkpoint", default="",
                    help="checkpoint(s), comma-separated; the first is written (default: by model)")
    ap.add_argument("--aggregate", action="store_true", help="only rewrite the tables from the checkpoint(s)")
    ap.add_argument("--no-tables", action="store_true", help="only append to the checkpoint (secondary process)")
    ap.add_argument("--quick", action="store_true", help="2 questions per dataset, wo-rag/sr-rag/dragin")
    ap.add_argument("--datasets", default=",".join(DATASETS),
                    help="datasets this process answers, comma-separated (the tables cover all)")
    ap.add_argument("--backfill-extraction", action="store_true",
                    help="give checkpoint records written before the one answer extraction their forced answer")
    args = parse_args(ap)
    if not (SHARED_DATA / "questions").is_dir():
        sys.exit(f"evaluation data not found at {SHARED_DATA}")

    from dynaprag.config import to_dict
    from dynaprag.dynamic.methods import METHODS
    from dynaprag.jsonl_log import append_jsonl

    n = 2 if args.quick else args.n
    methods = ["wo-rag", "sr-rag", "dragin"] if args.quick else (
        args.methods.split(",") if args.methods else [m for m in METHODS.names() if m not in SKIP])
    if "sr-rag" not in methods and not args.methods:
        methods.insert(0, "sr-rag")
    questions = {ds: load_questions(ds, n) for ds in DATASETS}
    table = result_name(args.name if not args.quick else f"{args.name}.quick", args.model)
    paths = [Path(p) for p in (args.checkpoint or str(CHECKPOINTS / f"{table}.checkpoint.jsonl")).split(",")]
    ckpt = paths[0] if not args.quick else CHECKPOINTS / f"{table}.checkpoint.jsonl"
    done: dict[tuple, dict] = {}
    sr_seconds: dict[tuple, float] = {}
    for path in ([ckpt] if args.quick else paths):
        # only the file this process appends to is repaired: the others may be another process's
        read_checkpoint(path, done, sr_seconds, repair=path == ckpt and not args.aggregate)
    all_methods = sorted({k[0] for k in done} | {row_name(m) for m in methods}, key=lambda m: (m != "sr-rag", m))
    corpus = SHARED_DATA / "corpus" / "wiki_paragraphs.jsonl"

    from dynaprag.pipeline import PipelineConfig
    from dynaprag.retrieval import RetrieverConfig

    config = PipelineConfig(model=args.model, max_new_tokens=args.max_new_tokens,
                            retrieval=RetrieverConfig(corpus=str(corpus)))
    if not args.aggregate:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        from dynaprag.pipeline import Pipeline

        pipe = Pipeline.from_config(config)
        if args.backfill_extraction:
            backfill(paths, pipe, questions)
            done.clear(), sr_seconds.clear()
            for path in paths:
                read_checkpoint(path, done, sr_seconds)
        run = f"{os.uname().nodename}-{os.getpid()}-{int(time.time())}"
        stamp = {"run": run, "git_commit": git_commit(), "dtype": str(pipe.lm.dtype).removeprefix("torch.")}
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        with ckpt.open("ab") as out:
            for i in range(args.start, n):
                for ds in DATASETS:
                    if ds not in args.datasets.split(",") or i >= len(questions[ds]) or args.backfill_extraction:
                        continue
                    q = questions[ds][i]
                    pipe.config = dataclasses.replace(pipe.config, dataset=ds)  # per-dataset preset settings
                    pending = [m for m in methods if (row_name(m), ds, q["id"]) not in done]
                    if pending and "sr-rag" not in pending and (ds, q["id"], run) not in sr_seconds:
                        pending.insert(0, "sr-rag")  # this run's timing reference for the question
                    for m in pending:
                        t0 = time.perf_counter()
                        name, options = split_label(m)
                        m = row_name(m)
                        ans = pipe.extract(q["question"], pipe.answer(q["question"], method=name, options=options))
                        tr = ans.trace
                        rec = {"method": m, "dataset": ds, "id": q["id"], "text": ans.text, "short": ans.short,
                               "answers": q["answers"], "retrievals": len(tr.retrievals),
                               "forward_passes": tr.forward_passes, "generated_tokens": tr.generated_tokens,
                               "prompt_tokens": tr.prompt_tokens, "seconds": time.perf_counter() - t0,
                               "queries": [r.query for r in tr.retrievals], **stamp,
                               "extraction": tr.extraction, "preset": name, "options": options}
                        append_jsonl(out, rec)
                        done.setdefault((m, ds, q["id"]), score(rec))
                        if m == "sr-rag":
                            sr_seconds[(ds, q["id"], run)] = rec["seconds"]
                        print(f"[{i + 1}/{n}] {ds} {m}: {rec['seconds']:.1f}s f1={done[(m, ds, q['id'])]['f1']:.2f} "
                              f"ret={rec['retrievals']} {ans.short[:40]!r}", flush=True)
                rows = aggregate(done, sr_seconds, all_methods, questions)
                if rows and not args.no_tables:
                    _write(table, rows, args, config, all_methods, questions, paths, to_dict)
    rows = aggregate(done, sr_seconds, all_methods, questions)
    if not args.no_tables:
        _write(table, rows, args, config, all_methods, questions, paths, to_dict)
    print(summary(rows))


def _dragin_note(rows: list[dict]) -> str:
    """DRAGIN's time against the issue's target (<= 1.5x sr-rag), for each DRAGIN row."""
    out = []
    for label in dict.fromkeys(r["method"] for r in rows if r["method"].startswith("dragin")):
        parts = [f"{r['dataset']} {r['ratio_to_sr_rag']:.2f}x sr-rag time, {r['retrievals_per_question']:.2g} "
                 f"retrievals/question" for r in rows if r["method"] == label]
        out.append(f"{label}: " + "; ".join(parts) + ".")
    return " ".join(out)


def _size_note(model: str) -> str:
    if model == DEFAULT_MODEL:
        return "At 135M parameters differences between methods are mostly noise (MODELS.md)."
    return f"Model {model}: the quality comparison (MODELS.md: use 0.5B+ for quality, 135M for speed)."


def _write(table, rows, args, config, methods, questions, paths, to_dict) -> None:
    n_done = {ds: max((r["n"] for r in rows if r["dataset"] == ds), default=0) for ds in questions}
    notes = (f"Questions: the first N of ../shared/data/questions/{{hotpotqa,2wikimultihopqa}}.jsonl; each row "
             f"aggregates the questions its method and sr-rag both finished (column n; target "
             f"{args.n if not args.quick else 2} per dataset). BM25 (bm25s, Lucene) over "
             f"corpus/wiki_paragraphs.jsonl, k=3, max_new_tokens={args.max_new_tokens}, paper-default thresholds, "
             f"greedy decoding. cover_em = the gold answer occurs in the short answer (lenient to answers "
             f"wrapped in a sentence). forced_answer_share = share of answers without 'So the answer is' whose short "
             f"answer was read by the one answer extraction (a 20-token forced continuation after 'So the answer is' "
             f"from the exemplar prompt without passages, as DRAGIN's scoring; its tokens and seconds count in the "
             f"method's cost); f1_unforced = F1 on the answers' own first lines instead. ratio_to_sr_rag = time over "
             f"sr-rag's on the same questions measured in the same run (n_timed_with_sr_rag questions). "
             f"{summary(rows)} {_dragin_note(rows)} {_size_note(args.model)} "
             f"Skipped: {', '.join(f'{k} ({v})' for k, v in SKIP.items())}.")
    write_results(table, rows, model=args.model,
                  data={ds: {"file": f"questions/{ds}.jsonl", "questions_requested": len(qs),
                             "questions_finished": n_done.get(ds, 0)} for ds, qs in questions.items()},
                  notes=notes, dtype=resolved_dtype(config.dtype), extra={"config": to_dict(config), "methods": methods,
                                      "checkpoints": [str(p) for p in paths]})


if __name__ == "__main__":
    from dynaprag.jsonl_log import CorruptLogError

    try:
        main()
    except CorruptLogError as exc:  # a checkpoint line other than the last is bad: one line, exit code 2
        raise SystemExit(print(f"error: {exc}", file=sys.stderr) or 2)
