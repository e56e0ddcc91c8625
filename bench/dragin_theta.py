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

A thin wrapper over :mod:`dynaprag.eval.calibrate` (``question_maxima``, ``choose_theta`` with
target rate ``1 - quantile``), the library behind ``dynaprag calibrate``; unlike that command it
pools two datasets into one θ and keeps the benchmark's prompt (the default exemplars), so its
θ is the one ``bench/dynamic.py`` runs with.

    .venv/bin/python bench/dragin_theta.py
    .venv/bin/python bench/dragin_theta.py --model qwen2.5-coder-0.5b --n 10
"""
from __future__ import annotations

import argparse
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
    from dynaprag.eval.calibrate import choose_theta, question_maxima
    from dynaprag.pipeline import Pipeline, PipelineConfig
    from dynaprag.retrieval import RetrieverConfig

    config = PipelineConfig(model=args.model, max_new_tokens=args.max_new_tokens, method="dragin",
                            retrieval=RetrieverConfig(corpus=str(SHARED_DATA / "corpus" / "wiki_paragraphs.jsonl")))
    pipe = Pipeline.from_config(config)
    rows, pooled = [], []
    for ds in DATASETS:
        split = load_split(ds, args.start, args.n)

        def report(i: int, top: float, ds: str = ds, split: list[dict] = split) -> None:
            print(f"{ds} {split[i]['id']}: max RIND {max(top, 0.0):.4f}", flush=True)

        # RIND is never negative, so a question the trigger scored nothing on (-inf) has maximum 0
        maxima = [max(m, 0.0) for m in question_maxima(pipe, [q["question"] for q in split], on_score=report)]
        pooled += maxima
        rows.append(_row(ds, maxima))
    theta = choose_theta(pooled, 1.0 - args.quantile)
    rows.append(_row("pooled", pooled))
    trigger = pipe.method().settings()["trigger"]
    notes = (f"Per-question maximum of DRAGIN's RIND (trigger {trigger['name']!r}, "
             f"{', '.join(f'{k}={v}' for k, v in trigger.items() if k not in ('name', 'theta'))}) while answering "
             f"without retrieval, questions {args.start}..{args.start + args.n - 1} of each dataset (disjoint from "
             f"bench/dynamic.py's 0..{args.start - 1}); max_new_tokens={args.max_new_tokens}, greedy. Chosen theta = "
             f"the {args.quantile:g}-quantile of the pooled maxima = {theta:.4g}.")
    write_results(result_name("dragin_theta", args.model), rows, model=args.model,
                  data={ds: {"file": f"questions/{ds}.jsonl", "first": args.start, "n": args.n} for ds in DATASETS},
                  notes=notes, extra={"theta": theta, "quantile": args.quantile})
    print(f"theta = {theta:.4g}")


def _row(dataset: str, maxima: list[float]) -> dict:
    from dynaprag.eval.calibrate import quantile

    return {"dataset": dataset, "questions": len(maxima), "min": min(maxima), "q25": quantile(maxima, 0.25),
            "median": quantile(maxima, 0.5), "q75": quantile(maxima, 0.75), "max": max(maxima),
            "share_above_paper_theta_1.2": sum(m > 1.2 for m in maxima) / len(maxima)}


if __name__ == "__main__":
    main()
