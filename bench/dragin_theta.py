"""Tune DRAGIN's RIND threshold θ for a model on a split disjoint from the benchmark.

DRAGIN's θ (1.2 on 2Wiki, 1.4 on HotpotQA; Su et al. 2024) was set for 7B-13B models; the
RIND scores of SmolLM2-135M are smaller (the per-question maximum is mostly 0.2-1.1), so the
paper's θ almost never fires and ``dragin`` degenerates to ``wo-rag``.
This script rescales θ for the model instead of guessing: it decodes questions N..N+T of each
dataset (``bench/dynamic.py`` reports on questions 0..N-1, so nothing is tuned on them, as
``../shared/data/README.md`` asks) with retrieval disabled, records each question's largest
RIND score, and takes their ``--quantile`` (default: the median) as θ, so DRAGIN fires before
the end of the answer on about that share of questions. It writes
``bench/results/dragin_theta.{json,md}`` (``dragin_theta.<model>.*`` for another ``--model``);
``bench/dynamic.py`` with the same model runs ``dragin@theta=<that θ>``.

    .venv/bin/python bench/dragin_theta.py
    .venv/bin/python bench/dragin_theta.py --model qwen2.5-coder-0.5b --n 10
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_MODEL, RESULTS, SHARED_DATA, result_name, write_results  # noqa: E402

DATASETS = ("hotpotqa", "2wikimultihopqa")


def load_split(name: str, start: int, n: int) -> list[dict]:
    import json

    with (SHARED_DATA / "questions" / f"{name}.jsonl").open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return rows[start: start + n]


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank q-quantile: the smallest value with at least a share q of values at or below it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def tuned_theta(model: str = DEFAULT_MODEL) -> float | None:
    """The θ a previous run of this script chose for ``model``, or None if it has not run."""
    import json

    path = RESULTS / f"{result_name('dragin_theta', model)}.json"
    return json.loads(path.read_text())["theta"] if path.is_file() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--start", type=int, default=50, help="first tuning question (the benchmark uses 0..start-1)")
    ap.add_argument("--n", type=int, default=25, help="tuning questions per dataset")
    ap.add_argument("--quantile", type=float, default=0.5, help="θ = this quantile of per-question max RIND")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from dynaprag.pipeline import Pipeline, PipelineConfig
    from dynaprag.retrieval import RetrieverConfig

    config = PipelineConfig(model=args.model, max_new_tokens=args.max_new_tokens,
                            retrieval=RetrieverConfig(corpus=str(SHARED_DATA / "corpus" / "wiki_paragraphs.jsonl")))
    pipe = Pipeline.from_config(config)
    rows, pooled = [], []
    for ds in DATASETS:
        maxima = []
        for q in load_split(ds, args.start, args.n):
            ans = pipe.answer(q["question"], method="dragin", options={"theta": float("inf")})
            maxima.append(max((t.score for t in ans.trace.tokens if t.score is not None), default=0.0))
            print(f"{ds} {q['id']}: max RIND {maxima[-1]:.4f}", flush=True)
        pooled += maxima
        rows.append({"dataset": ds, "questions": len(maxima), "min": min(maxima),
                     "q25": quantile(maxima, 0.25), "median": quantile(maxima, 0.5),
                     "q75": quantile(maxima, 0.75), "max": max(maxima),
                     "share_above_paper_theta_1.2": sum(m > 1.2 for m in maxima) / len(maxima)})
    theta = quantile(pooled, args.quantile)
    rows.append({"dataset": "pooled", "questions": len(pooled), "min": min(pooled),
                 "q25": quantile(pooled, 0.25), "median": quantile(pooled, 0.5), "q75": quantile(pooled, 0.75),
                 "max": max(pooled), "share_above_paper_theta_1.2": sum(m > 1.2 for m in pooled) / len(pooled)})
    notes = (f"Per-question maximum of DRAGIN's RIND (paper variant, Eq. 4) while answering without retrieval, "
             f"questions {args.start}..{args.start + args.n - 1} of each dataset (disjoint from bench/dynamic.py's "
             f"0..{args.start - 1}); max_new_tokens={args.max_new_tokens}, greedy. Chosen theta = the "
             f"{args.quantile:g}-quantile of the pooled maxima = {theta:.4g}.")
    write_results(result_name("dragin_theta", args.model), rows, model=args.model,
                  data={ds: {"file": f"questions/{ds}.jsonl", "first": args.start, "n": args.n} for ds in DATASETS},
                  notes=notes, extra={"theta": theta, "quantile": args.quantile})
    print(f"theta = {theta:.4g}")


if __name__ == "__main__":
    main()
