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
A compiled variant compiles in an untimed warm-up question first (``warmup_s``); each block of
rows, length bucket and attention read is its own graph, so under load a compiled variant can
spend many minutes compiling before it is timed.

``--signals N`` adds how far each variant's white-box signals move from eager **float32** (a
float32 copy of the model is loaded for it), teacher-forced along eager float32's 24-token
greedy answers to the first N questions (no passages): mean |Δ log-prob| of the forced token,
mean |Δ entropy|, top-1 agreement, the last layer's head-averaged attention row (mean and max
L1 distance; a row sums to 1) and the last hidden state (mean relative L2 error).

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


def signal_rows(pipes, questions: list[dict], n: int, model: str) -> list[dict]:
    """Each variant's signals against eager float32 along its greedy answers (``--signals``)."""
    from dynaprag.lm import GenerationConfig, Generator, load_model
    from dynaprag.lm.signals import ATTENTION, HiddenState

    cfg = GenerationConfig(signals=(ATTENTION, HiddenState(-1)))
    reference = Generator(load_model(model, dtype="float32"))
    builder = next(iter(pipes.values())).builder()

    def forced(gen, ids: list[int], answer: list[int]) -> list[tuple]:
        state, out = gen.start(ids), []
        for token in answer:
            lp = gen.next_logprobs(state, cfg)
            ent = float(-(lp.exp() * lp).nan_to_num().sum())
            out.append((int(lp.argmax()), float(lp[token]), ent, state.signals["attention"].float(),
                        state.signals["hidden:-1"].float()))
            state.ids.append(token)
            state.generated.append(True)
            state.logits = None
        return out

    prompts = [builder.build(q["question"]) for q in questions[:n]]
    answers = [reference.generate(reference.start(ids), GenerationConfig(max_new_tokens=24, stop_at_eos=False)).token_ids
               for ids in prompts]
    wanted = [forced(reference, ids, a) for ids, a in zip(prompts, answers)]
    rows = []
    for v, pipe in pipes.items():
        got = [g for ids, a in zip(prompts, answers) for g in forced(pipe.generator, ids, a)]
        ref = [r for rs in wanted for r in rs]
        l1 = [float((g[3] - r[3]).abs().sum()) for g, r in zip(got, ref)]
        rows.append({"table": "signals vs eager-float32", "decoder": v,
                     "path": pipe.generator.path, "n": len(prompts), "tokens": len(got),
                     "top1_agreement": sum(g[0] == r[0] for g, r in zip(got, ref)) / len(got),
                     "mean_abs_dlogprob": sum(abs(g[1] - r[1]) for g, r in zip(got, ref)) / len(got),
                     "mean_abs_dentropy_nats": sum(abs(g[2] - r[2]) for g, r in zip(got, ref)) / len(got),
                     "max_abs_dentropy_nats": max(abs(g[2] - r[2]) for g, r in zip(got, ref)),
                     "mean_attention_l1": sum(l1) / len(l1), "max_attention_l1": max(l1),
                     "mean_hidden_rel_err": sum(float((g[4] - r[4]).norm() / r[4].norm())
                                                for g, r in zip(got, ref)) / len(got)})
        print(f"signals {v}: {rows[-1]}", flush=True)
    return rows


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
    ap.add_argument("--signals", type=int, default=0, metavar="N",
                    help="also compare each variant's signals with eager float32 on N questions")
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
    cases, signals = [], signal_rows(pipes, questions, args.signals, args.model) if args.signals else []
    for method in [m for m in args.methods.split(",") if m]:
        for batch in [int(b) for b in args.batch_sizes.split(",") if b]:
            for r in range(args.rounds):
                order = variants if (r + len(cases)) % 2 == 0 else variants[::-1]
                for v in order:
                    case = run_case(pipes[v], method, args.dataset, questions, batch)
                    cases.append({"method": method, "batch_size": batch, "decoder": v, "round": r, **case})
                    print(f"{method} batch {batch} {v}: {case['seconds'] / len(questions):.2f} s/question", flush=True)
            write(args, base, to_dict, cases, pipes, compile_s, questions, signals)
    if signals and not cases:
        write(args, base, to_dict, cases, pipes, compile_s, questions, signals)


def write(args, base, to_dict, cases, pipes, compile_s, questions, signals) -> None:
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
                "table": "s/question", "method": method, "batch_size": batch, "decoder": v,
                "path": pipes[v].generator.path,
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
             f"question (compiles a compiled variant's graphs for its buckets). Table 'signals vs eager-float32' "
             f"(--signals): teacher-forced along eager float32's greedy answers, see the script's docstring. "
             f"Process {os.getpid()}.")
    write_results(result_name(args.name, args.model), rows + signals, model=args.model,
                  data={args.dataset: {"file": f"questions/{args.dataset}.jsonl", "questions": len(questions)}},
                  notes=notes, extra={"config": to_dict(base), "git_commit_measured": git_commit()},
                  dtype=resolved_dtype(args.dtype), group_by="table",
                  results_dir=Path(args.results_dir) if args.results_dir else None)


if __name__ == "__main__":
    main()
