"""A published table reproduced on our model (issue 16): ``dynaprag reproduce`` as a benchmark.

Runs (or resumes) ``dynaprag.eval.reproduce.reproduce`` for ``--table`` on ``--model`` and writes
``bench/results/reproduce.<table>[.<model>].{json,md,png,svg}``: the side-by-side Markdown of the
reproduction (ours with 95 % intervals, the paired difference to sr-rag, the published number,
the best method per dataset) as the notes, and one flat row per (dataset, method, metric) with
the run's costs (s/question, retrievals/question, questions/hour, share of forced answers).

Thresholds: every ``bench/results/calibrate.<method>.<dataset>.<model>.yaml`` that exists for
the table's methods and datasets is applied (``--calibrated`` overrides the search; ``--no-calibrated``
uses the presets' θ). Calibration splits start at question 100, so ``--limit`` stays <= 100.

The runs live in ``bench/checkpoints/reproduce.<table>.<model>/`` (not committed): a killed run
resumes; two processes can split the table with ``--methods`` and a last call without it writes
the whole table from the finished runs.

    .venv/bin/python bench/reproduce.py --model qwen2.5-coder-0.5b --limit 100 --batch-size 8   # hours
    .venv/bin/python bench/reproduce.py --quick --results /tmp/rq       # smoke: 135M, 2 questions, 2 methods
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CHECKPOINTS, RESULTS, SHARED_DATA, parse_args, resolved_dtype, result_name, write_results,
)

COSTS = ("s_per_question", "retrievals_per_question", "generated_tokens_per_question", "questions_per_hour",
         "forced_answer_share")


def default_calibrations(table, model: str, datasets) -> list[Path]:
    """The committed calibration configs for this model and the table's methods and datasets."""
    found = []
    for m in table.methods:
        for dataset in datasets:
            path = RESULTS / f"calibrate.{m.ours}.{dataset}.{model}.yaml"
            if path.is_file():
                found.append(path)
    return found


def cost_columns(run_dir: Path) -> dict:
    """The run's cost summary (its ``summary.json``) under the benchmark's key names."""
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        return {}
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    return {key: summary[key] for key in COSTS if summary.get(key) is not None}


def main(argv=None) -> int:
    from dynaprag.eval.reproduce import best_per_dataset, get_table, reproduce

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default="dragin-table2")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=20, help="first N questions of each dataset")
    ap.add_argument("--datasets", default=None, help="comma-separated (default: the table's)")
    ap.add_argument("--methods", default=None, help="comma-separated subset (split a table over processes)")
    ap.add_argument("--batch-size", type=int, default=8, help="questions decoded together (eval --batch-size)")
    ap.add_argument("--calibrated", action="append", default=None, metavar="FILE",
                    help="calibration configs (default: bench/results/calibrate.<method>.<dataset>.<model>.yaml)")
    ap.add_argument("--no-calibrated", action="store_true", help="use the presets' thresholds")
    ap.add_argument("--runs", default=None, help="run folders (default bench/checkpoints/reproduce.<table>.<model>)")
    ap.add_argument("--results", default=None, help="results folder (default bench/results)")
    ap.add_argument("--quick", action="store_true", help="135M, 2 HotpotQA questions, wo-rag and sr-rag")
    args = parse_args(ap, argv)  # --note: run conditions, written by write_results

    table = get_table(args.table)
    datasets = args.datasets.split(",") if args.datasets else list(table.datasets)
    methods = args.methods.split(",") if args.methods else None
    limit = args.limit
    if args.quick:
        args.model, limit, datasets, methods = "smollm2-135m", 2, ["hotpotqa"], ["wo-rag", "sr-rag"]
    name = result_name(f"reproduce.{args.table}" + (".quick" if args.quick else ""), args.model)
    runs = Path(args.runs) if args.runs else CHECKPOINTS / f"reproduce.{args.table}.{args.model}"
    if args.quick and not args.runs:
        runs = CHECKPOINTS / f"{name}"
    calibrated = [] if args.no_calibrated or args.quick else (
        [Path(p) for p in args.calibrated] if args.calibrated else default_calibrations(table, args.model, datasets))
    result = reproduce(table, model=args.model, data_dir=SHARED_DATA, out=runs, limit=limit, datasets=datasets,
                       methods=methods, calibrated=calibrated, batch_size=args.batch_size, progress=False)
    rows = [{**{k: v for k, v in row.items() if k not in ("run", "theta_from")},
             **cost_columns(Path(row["run"]))} for row in result.rows]
    results = Path(args.results) if args.results else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    for src in result.files:
        if src.suffix in (".png", ".svg"):
            shutil.copyfile(src, results / f"{name}{src.suffix}")
    notes = result.markdown.split("\n", 2)[2]  # without its own title: write_results adds the name
    notes += (f"\nRuns: {runs} (resumable, not committed); calibrations: "
              + (", ".join(str(p) for p in calibrated) or "none (the presets' θ)")
              + f"; batch size {args.batch_size}; costs from each run's summary.json (s_per_question is the wall "
                "time from joining the batch to the answer, other questions' work included; compare methods by "
                "questions_per_hour).")
    write_results(name, rows, model=args.model, dtype=resolved_dtype("auto"),
                  data={"questions": {d: f"{SHARED_DATA}/questions/{d}.jsonl, first {limit}" for d in datasets},
                        "corpus": f"{SHARED_DATA}/corpus (per dataset, dynaprag.eval.datasets)"},
                  notes=notes, extra={"table": args.table, "citation": table.citation,
                                      "best": best_per_dataset(table, result.rows),
                                      "calibrated": [str(p) for p in calibrated]},
                  results_dir=results, group_by="dataset")
    print(f"wrote {results / (name + '.json')}, .md, .png, .svg")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
