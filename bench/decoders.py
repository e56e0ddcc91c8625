"""The eager and the fast decoder side by side: s/question of whole methods, same questions, one run.

Each case is (method, dataset, batch size, decoder): the first N questions of ``../shared/data``
HotpotQA (BM25 over the pooled Wikipedia paragraphs, the preset's per-dataset settings)
answered through :class:`~dynaprag.dynamic.batch.BatchLoop`, timed as a whole. The decoders
share one loaded model and one retriever; each is a :class:`~dynaprag.pipeline.Pipeline` with
its own ``decoder`` / ``compile`` / ``quantize`` (a variant is spelled ``fast``,
``fast+compile``, ``fast+int8``, ``fast+compile+int4``, ...). Per (method, batch size) the
decoders run in alternating order round after round (``--rounds``), so slow drift of the
shared machine favours none; ``ratio_to_eager`` is eager's s/question over the variant's,
summed over the rounds of the same process, and ``same_answer_as_eager`` the share of answer
texts equal to eager's (1.0 expected for ``fast`` in float32; quantized weights change answers).
A compiled variant compiles in an untimed warm-up question first (``compile_s``).

    .venv/bin/python bench/decoders.py --quick       # 135M, float32, sr-rag and dragin, batch 1 and 4
    .venv/bin/python bench/decoders.py --dtype bfloat16 --decoders eager,fast,fast+compile,fast+compile+int8
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CHECKPOINTS, DEFAULT_MODEL, SHARED_DATA, git_commit, load_questions, parse_args, resolved_dtype, result_name,
    write_results,
)


def variant_config(config, variant: str):
    """``config`` with the decoder knobs ``variant`` names (``eager``, ``fast``, ``fast+compile+int8``, ...)."""
    decoder, *knobs = variant.split("+")
    unknown = [k for k in knobs if k not in ("compile", "int8", "int4")]
    if decoder not in ("eager", "fast") or unknown or (decoder == "eager" and knobs):
        raise SystemExit(f"unknown decoder variant {variant!r}: eager, or fast with +compile, +int8 or +int4")
    quantize = next((k for k in knobs if k in ("int8", "int4")), "none")
    return dataclasses.replace(config, decoder=decoder, compile="compile" in knobs, quantize=quantize)


def run_case(pipe, method: str, dataset: str, questions: list[dict], batch: int) -> dict:
    from dynaprag.dynamic.batch import BatchLoop

    pipe.config = dataclasses.replace(pipe.config, dataset=dataset)
    loop = BatchLoop(pipe.loop(method), batch_size=batch)
    texts = [""] * len(questions)
    tokens = 0
    t0 = time.perf_counter()
    for index, answer in loop.answers([q["question"] for q in questions]):
        if isinstance(answer, Exception):
            raise answer
        texts[index] = answer.text
        tokens += answer.trace.generated_tokens
    return {"seconds": time.perf_counter() - t0, "texts": texts, "generated_tokens": tokens,
            "fallbacks": sum(pipe.generator.fallbacks.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="questions per case")
    ap.add_argument("--methods", default="sr-rag,dragin")
    ap.add_argument("--decoders", default="eager,fast", help="comma-separated variants; eager must be one")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--dataset", default="hotpotqa")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per (method, batch size)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--dtype", default="float32", help="auto | float32 | bfloat16")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--name", default="decoders")
    ap.add_argument("--results-dir", default="", help="write the tables here instead of bench/results")
    ap.add_argument("--quick", action="store_true", help="135M, 3 questions, batch 1 and 4, one round")
    args = parse_args(ap)
    if not (SHARED_DATA / "questions").is_dir():
        sys.exit(f"evaluation data not found at {SHARED_DATA}")
    if args.quick:
        args.n, args.batch_sizes, args.rounds, args.model = 3, "1,4", 1, DEFAULT_MODEL
        args.results_dir = args.results_dir or str(CHECKPOINTS / "quick")
    variants = [v for v in args.decoders.split(",") if v]
    if "eager" not in variants:
        sys.exit("--decoders must include eager (every ratio is against it)")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from dynaprag.config import to_dict
    from dynaprag.lm import load_model
    from dynaprag.pipeline import Pipeline, PipelineConfig
    from dynaprag.retrieval import RetrieverConfig, build_retriever

    base = PipelineConfig(model=args.model, dtype=args.dtype, max_new_tokens=args.max_new_tokens,
                          retrieval=RetrieverConfig(corpus=str(SHARED_DATA / "corpus" / "wiki_paragraphs.jsonl")))
    lm, retriever = load_model(args.model, dtype=args.dtype), build_retriever(base.retrieval)
    questions = load_questions(args.dataset, args.n)
    pipes, compile_s = {}, {}
    for v in variants:
        pipes[v] = Pipeline.from_config(variant_config(base, v), lm=lm, retriever=retriever)
        t0 = time.perf_counter()  # warm-up: index pages, prefix cache, compiled graphs (untimed)
        run_case(pipes[v], "sr-rag", args.dataset, questions[:1], 1)
        compile_s[v] = time.perf_counter() - t0
        print(f"{v}: {pipes[v].generator.path}, warm-up {compile_s[v]:.1f}s", flush=True)
    cases = []
    for method in [m for m in args.methods.split(",") if m]:
        for batch in [int(b) for b in args.batch_sizes.split(",") if b]:
            for r in range(args.rounds):
                order = variants if (r + len(cases)) % 2 == 0 else variants[::-1]
                for v in order:
                    case = run_case(pipes[v], method, args.dataset, questions, batch)
                    cases.append({"method": method, "batch_size": batch, "decoder": v, "round": r, **case})
                    print(f"{method} batch {batch} {v}: {case['seconds'] / len(questions):.2f} s/question", flush=True)
            write(args, base, to_dict, cases, pipes, compile_s, questions)


def write(args, base, to_dict, cases, pipes, compile_s, questions) -> None:
    rows = []
    for method, batch in dict.fromkeys((c["method"], c["batch_size"]) for c in cases):
        mine = [c for c in cases if (c["method"], c["batch_size"]) == (method, batch)]
        eager = [c for c in mine if c["decoder"] == "eager"]
        for v in dict.fromkeys(c["decoder"] for c in mine):
            runs = [c for c in mine if c["decoder"] == v]
            n = len(questions) * len(runs)
            seconds = sum(c["seconds"] for c in runs)
            paired = [(c, e) for c in runs for e in eager if e["round"] == c["round"]]
            same = [a == b for c, e in paired for a, b in zip(c["texts"], e["texts"])]
            rows.append({
                "method": method, "batch_size": batch, "decoder": v, "path": pipes[v].generator.path,
                "n": n, "s_per_question": seconds / n,
                "generated_tokens_per_s": sum(c["generated_tokens"] for c in runs) / seconds,
                "ratio_to_eager": (sum(e["seconds"] for _, e in paired) / sum(c["seconds"] for c, _ in paired))
                if paired else float("nan"),
                "same_answer_as_eager": sum(same) / len(same) if same else float("nan"),
                "fast_path_fallbacks": max(c["fallbacks"] for c in runs),
                "warmup_s": round(compile_s[v], 1),
            })
    notes = (f"Questions: the first {args.n} of ../shared/data/questions/{args.dataset}.jsonl; BM25 over "
             f"corpus/wiki_paragraphs.jsonl, k=3, max_new_tokens={args.max_new_tokens}, greedy, dtype "
             f"{resolved_dtype(args.dtype)}, {args.rounds} alternating round(s) per method and batch size. "
             f"ratio_to_eager = eager's s/question over the variant's in the same rounds (>1: faster); "
             f"same_answer_as_eager = share of answer texts equal to eager's; warmup_s = the untimed first "
             f"question (compiles a compiled variant's graphs for its buckets). Process {os.getpid()}.")
    write_results(result_name(args.name, args.model), rows, model=args.model,
                  data={args.dataset: {"file": f"questions/{args.dataset}.jsonl", "questions": len(questions)}},
                  notes=notes, extra={"config": to_dict(base), "git_commit_measured": git_commit()},
                  dtype=resolved_dtype(args.dtype), results_dir=Path(args.results_dir) if args.results_dir else None)


if __name__ == "__main__":
    main()
