"""Reports over run folders: a markdown table with confidence intervals, paired tests, plots.

``dynaprag report RUN_DIR...`` reads each folder's ``config.json``, ``summary.json`` and
``records.jsonl`` and writes into the output folder

* ``report.md``: one row per run (dataset, run label, model and dtype) with EM, F1 and cover EM,
  each with its 95 % bootstrap interval over the run's questions, then yes/no accuracy,
  gold-passage recall, retrievals and tokens per question and the cost: seconds per question
  for a run that answered one question at a time, questions per hour for a batched run (a
  question's seconds inside a batch are its latency among the others', not its cost); below it, every method against a baseline
  (default ``sr-rag``) of the same dataset on the questions both runs answered (matched by
  question id, their number stated): the mean difference, its paired bootstrap interval, the
  paired randomisation test's p-value and a verdict, ``within noise`` unless both the interval
  and the test say otherwise (:mod:`dynaprag.eval.stats` says why);
* ``report.json``: the same numbers as flat rows (settings, one row per run, one per
  comparison and metric);
* plots as PNG and SVG (:mod:`dynaprag.eval.plots`): F1 per method, F1 against seconds and
  against retrievals per question with intervals as error bars, where retrieval fired.

A run is labelled by its method; runs of one method on one dataset get the knobs that differ
between them (``dragin (trigger.theta=4.7)``), else their folder names, so no two rows read alike.

Summaries are recomputed from the records, so a report never disagrees with its data, and
cover the questions of the run's config only: records beyond a shortened ``limit`` stay on disk
but are left out (see :func:`dynaprag.eval.records.records_within_limit`). The statistics are
seeded (``seed``) with ``resamples`` bootstrap resamples and sign flips. Files are written
atomically (:mod:`dynaprag.files`).

>>> print(report_table([load_run("runs/hotpot-sr"), load_run("runs/hotpot-dragin")]))  # doctest: +SKIP
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from dynaprag.eval.records import records_within_limit, summarize
from dynaprag.eval.run_folder import CONFIG, RECORDS, SUMMARY, RunError, read_records
from dynaprag.eval.stats import (DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED, Interval, PairedComparison,
                                 bootstrap_intervals, paired_comparisons)
from dynaprag.files import atomic_write_json, atomic_write_text

__all__ = ["DEFAULT_BASELINE", "Comparison", "Report", "ReportError", "Run", "build_report", "compare", "load_run",
           "plot_runs", "report_table", "retrieval_positions", "write_report"]

DEFAULT_BASELINE = "sr-rag"
#: metrics that get intervals and paired tests (per-question scores every record has)
INTERVAL_METRICS = (("em", "EM"), ("f1", "F1"), ("cover_em", "Cover EM"))
COLUMNS = INTERVAL_METRICS + (
    ("acc", "Acc"), ("recall", "Recall"), ("retrievals_per_question", "Retrievals/q"),
    ("generated_tokens_per_question", "Gen tok/q"), ("prompt_tokens_per_question", "Prompt tok/q"),
    ("forced_answer_share", "Forced"))
#: settings that say nothing about how a run answered: left out when labels name differing knobs
_NOT_KNOBS = ("question_file", "data_dir", "questions", "batch_size", "limit")


class ReportError(ValueError):
    """A report that cannot be made as asked (e.g. a baseline matching two runs); says what to pass."""


@dataclass
class Run:
    """One run folder: its label, resolved config, the records its config covers and their summary."""

    path: Path
    label: str
    dataset: str
    config: dict
    records: list[dict]
    summary: dict
    intervals: dict[str, Interval] = field(default_factory=dict)

    @property
    def model(self) -> str:
        """The model and the dtype it ran in, e.g. ``smollm2-135m, bfloat16`` (``auto`` for runs that
        predate recording the resolved dtype)."""
        pipeline = self.config.get("pipeline", {})
        dtype = self.config.get("resolved_dtype") or pipeline.get("dtype")
        return ", ".join(str(v) for v in (pipeline.get("model", "?"), dtype) if v)

    @property
    def batch_size(self) -> int:
        return int(self.config.get("batch_size") or 1)

    def seconds_per_question(self) -> float:
        """A question's cost in seconds: its own time, or for a batched run 3600 / questions per hour
        (a batched question's own seconds are its latency among the others')."""
        qph = self.summary.get("questions_per_hour") if self.batch_size > 1 else None
        return 3600.0 / qph if qph else float(self.summary.get("s_per_question") or 0.0)

    def cost(self) -> str:
        """Seconds per question, or for a batched run questions per hour (its last invocation's)."""
        if self.batch_size > 1:
            qph = self.summary.get("questions_per_hour")
            return f"{qph:.0f} q/h (batch {self.batch_size})" if qph else f"– q/h (batch {self.batch_size})"
        s = self.summary.get("s_per_question")
        return "–" if s is None else f"{s:.2f} s/q"

    def scores(self, metric: str) -> dict[str, float]:
        """Per-question scores of ``metric`` by question id (questions without it left out)."""
        return {str(r["id"]): float(r["scores"][metric]) for r in self.records
                if r.get("scores", {}).get(metric) is not None}


@dataclass
class Comparison:
    """A method's run against the baseline run of the same dataset, on their shared question ids."""

    dataset: str
    method: str
    baseline: str
    n_method: int
    n_baseline: int
    metrics: dict[str, PairedComparison]

    @property
    def n_paired(self) -> int:
        return next(iter(self.metrics.values())).n


@dataclass
class Report:
    """Runs with their intervals, comparisons against the baseline, notes, and the settings used."""

    runs: list[Run]
    comparisons: list[Comparison]
    notes: list[str]
    baseline: str = DEFAULT_BASELINE
    seed: int = DEFAULT_SEED
    resamples: int = DEFAULT_RESAMPLES
    confidence: float = DEFAULT_CONFIDENCE

    def markdown(self) -> str:
        """The run table, then the paired comparisons (or why there are none)."""
        pct = f"{self.confidence * 100:g} %"
        header = ["Dataset", "Method", "N"] + [name for _, name in COLUMNS] + ["Cost", "Model, dtype"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for run in sorted(self.runs, key=lambda r: (r.dataset, r.label)):
            cells = [run.dataset, run.label, str(run.summary["questions"])]
            cells += [str(run.intervals[key]) if key in run.intervals else _fmt(run.summary.get(key))
                      for key, _ in COLUMNS]
            lines.append("| " + " | ".join(cells + [run.cost(), run.model]) + " |")
        lines += ["", f"EM, F1 and Cover EM: mean [{pct} percentile bootstrap interval over the run's questions; "
                      f"{self.resamples} resamples, seed {self.seed}]. Cost: seconds per question (s/q) for a run "
                      "answered one question at a time; for a batched run, questions per hour (q/h) over its last "
                      "invocation, since a question's seconds inside a batch are its latency, not its cost."]
        lines += ["", f"## Against {self.baseline} on the same questions", ""]
        if self.comparisons:
            lines += [f"Δ = method − {self.baseline} on the questions both runs answered (matched by id; Paired N). "
                      f"Interval: {pct} paired bootstrap; p: two-sided paired randomisation (sign-flip) test. "
                      f"*within noise*: the interval includes 0 or p ≥ {1 - self.confidence:.2g}.", ""]
            head = ["Comparison", "Dataset", "Paired N", "Metric", "Method", self.baseline, "Δ", f"{pct} CI of Δ",
                    "p", "Verdict"]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for comp in self.comparisons:
                for key, name in INTERVAL_METRICS:
                    if key in comp.metrics:
                        c = comp.metrics[key]
                        verdict = c.verdict if c.within_noise else f"**{c.verdict}**"
                        lines.append(f"| {comp.method} vs {comp.baseline} | {comp.dataset} | {c.n} | {name} | "
                                     f"{c.mean_a:.3f} | {c.mean_b:.3f} | {c.difference:+.3f} | "
                                     f"[{c.low:+.3f}, {c.high:+.3f}] | {_fmt_p(c.p_value)} | {verdict} |")
        if self.notes:
            lines += [""] + [f"* {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        """Flat rows for ``report.json``: settings, one row per run, one per comparison and metric."""
        runs = []
        for run in sorted(self.runs, key=lambda r: (r.dataset, r.label)):
            row = {"dataset": run.dataset, "method": run.label, "run": str(run.path), "model": run.model,
                   "batch_size": run.batch_size, **run.summary}
            for key, iv in run.intervals.items():
                row.update({f"{key}_ci_low": iv.low, f"{key}_ci_high": iv.high})
            runs.append(row)
        comparisons = [{"dataset": comp.dataset, "method": comp.method, "baseline": comp.baseline, "metric": key,
                        "n_method": comp.n_method, "n_baseline": comp.n_baseline, "method_score": c.mean_a,
                        "baseline_score": c.mean_b, "verdict": c.verdict, **c.as_row()}
                       for comp in self.comparisons for key, c in comp.metrics.items()]
        return {"baseline": self.baseline, "seed": self.seed, "resamples": self.resamples,
                "confidence": self.confidence, "test": "paired randomisation (sign-flip)",
                "interval": "percentile bootstrap", "runs": runs, "comparisons": comparisons, "notes": self.notes}


def load_run(path: str | Path) -> Run:
    """Read a run folder written by :func:`dynaprag.eval.runner.evaluate`."""
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise RunError(f"{path} is not a run folder (no {CONFIG}); pass folders written by `dynaprag eval`")
    config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    on_disk = read_records(path / RECORDS)
    records = records_within_limit(on_disk, config)
    summary = summarize(records, config, beyond_limit=len(on_disk) - len(records))
    if int(config.get("batch_size") or 1) > 1 and (path / SUMMARY).is_file():
        try:  # throughput is measured while answering, not recoverable from the records
            written = json.loads((path / SUMMARY).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            written = {}
        for key in ("questions_per_hour", "questions_per_hour_over"):
            if written.get(key) is not None:
                summary[key] = written[key]
    return Run(path, str(summary.get("method") or path.name), str(config.get("dataset") or ""),
               config, records, summary)


def _flat(config: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _unique_labels(runs: Sequence[Run]) -> list[Run]:
    """Label runs that share a method and dataset by the knobs that differ between them
    (``dragin (trigger.theta=4.7)``), or by their folders when no knob does or too many do."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.label, run.dataset), []).append(run)
    for group in groups.values():
        if len(group) < 2:
            continue
        flat = [_flat(r.config) for r in group]
        keys = sorted({k for f in flat for k in f if k.split(".")[-1] not in _NOT_KNOBS})
        differing = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]
        shown = [k.removeprefix("pipeline.") for k in differing]
        labels = [", ".join(f"{s}={f[k] if k in f else 'default'}" for s, k in zip(shown, differing)) for f in flat]
        if not differing or len(differing) > 3 or len(set(labels)) < len(group):
            labels = _distinct_paths([r.path for r in group])
        for run, label in zip(group, labels):
            run.label = f"{run.label} ({label})"
    return list(runs)


def _distinct_paths(paths: Sequence[Path]) -> list[str]:
    """The shortest trailing parts of ``paths`` that tell them apart (``a/dragin``, ``b/dragin``)."""
    parts = [p.resolve().parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _baselines(runs: Sequence[Run], baseline: str) -> dict[str, Run]:
    """The baseline run of each dataset: the run labelled ``baseline``, else of method ``baseline``, else
    the run folder ``baseline``; two candidates in one dataset are an error naming their labels."""
    out = {}
    for dataset in sorted({r.dataset for r in runs}):
        group = [r for r in runs if r.dataset == dataset]
        found = ([r for r in group if r.label == baseline] or [r for r in group if r.summary.get("method") == baseline]
                 or [r for r in group if r.path.resolve() == Path(baseline).resolve()])
        if len(found) > 1:
            labels = ", ".join(repr(r.label) for r in found)
            raise ReportError(f"--baseline {baseline}: {len(found)} runs of {dataset} match ({labels}); "
                              "pass one of these labels or a run folder")
        if found:
            out[dataset] = found[0]
    return out


def compare(run: Run, base: Run, *, confidence: float = DEFAULT_CONFIDENCE, resamples: int = DEFAULT_RESAMPLES,
            seed: int = DEFAULT_SEED) -> Comparison | None:
    """``run`` against ``base`` on the question ids both answered; ``None`` when they share none."""
    metrics = [key for key, _ in INTERVAL_METRICS]
    a = {m: run.scores(m) for m in metrics}
    b = {m: base.scores(m) for m in metrics}
    shared = [q for q in a["em"] if all(q in a[m] and q in b[m] for m in metrics)]
    if not shared:
        return None
    result = paired_comparisons({m: [a[m][q] for q in shared] for m in metrics},
                                {m: [b[m][q] for q in shared] for m in metrics},
                                confidence=confidence, resamples=resamples, seed=seed)
    return Comparison(run.dataset, run.label, base.label, len(run.records), len(base.records), result)


def build_report(runs: Sequence[Run], *, baseline: str = DEFAULT_BASELINE, seed: int = DEFAULT_SEED,
                 resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE) -> Report:
    """Intervals for every run and every run against its dataset's ``baseline`` run."""
    settings = {"confidence": confidence, "resamples": resamples, "seed": seed}
    for run in runs:
        columns = {key: list(run.scores(key).values()) for key, _ in INTERVAL_METRICS}
        if run.records and all(len(v) == len(run.records) for v in columns.values()):
            run.intervals = bootstrap_intervals(columns, **settings)
    notes: list[str] = []
    comparisons: list[Comparison] = []
    bases = _baselines(runs, baseline)
    if not bases:
        methods = ", ".join(sorted({r.label for r in runs}))
        notes.append(f"Baseline {baseline!r} is not among these runs ({methods}): no paired comparisons. "
                     "Pick one with --baseline METHOD.")
    for dataset in sorted({r.dataset for r in runs}):
        base = bases.get(dataset)
        others = sorted((r for r in runs if r.dataset == dataset and r is not base), key=lambda r: r.label)
        if base is None:
            if bases and others:
                notes.append(f"{dataset}: no {baseline} run, so its methods are not compared.")
            continue
        for run in others:
            comp = compare(run, base, **settings)
            if comp is None:
                notes.append(f"{dataset}: {run.label} and {base.label} share no question id; not compared.")
                continue
            comparisons.append(comp)
            if comp.n_paired < max(comp.n_method, comp.n_baseline):
                notes.append(f"{dataset}: {run.label} vs {base.label} paired on {comp.n_paired} questions "
                             f"({run.label} answered {comp.n_method}, {base.label} {comp.n_baseline}).")
    if bases and not comparisons and not notes:
        notes.append(f"Only {baseline} runs: nothing to compare with them.")
    return Report(list(runs), comparisons, notes, baseline, seed, resamples, confidence)


def report_table(runs: Sequence[Run], **settings) -> str:
    """The report's markdown (see :func:`build_report` for ``settings``): runs sorted by dataset then method."""
    return build_report(runs, **settings).markdown()


def retrieval_positions(records: Sequence[dict]) -> list[float]:
    """Each retrieval's position as a fraction of its final answer's kept tokens, in [0, 1]."""
    out = []
    for record in records:
        trace = record.get("trace", {})
        length = max(len(trace.get("tokens", [])), 1)
        out += [min(r.get("position", 0) / length, 1.0) for r in trace.get("retrievals", [])]
    return out


def plot_runs(runs: Sequence[Run], out_dir: str | Path) -> list[Path]:
    """Write the report's plots (PNG and SVG) into ``out_dir``; returns their paths.

    Runs without intervals (not passed through :func:`build_report`) are plotted without error bars.
    """
    from dynaprag.eval.plots import PlotPoint, plot_report

    points = []
    for run in runs:
        f1 = run.summary.get("f1") or 0.0
        iv = run.intervals.get("f1")
        points.append(PlotPoint(run.label, run.dataset, f1, iv.low if iv else f1, iv.high if iv else f1,
                                run.seconds_per_question(),
                                run.summary.get("retrievals_per_question") or 0.0))
    labels = sorted({r.label for r in runs})
    positions = {m: [p for r in runs if r.label == m for p in retrieval_positions(r.records)] for m in labels}
    questions = {m: sum(len(r.records) for r in runs if r.label == m) for m in labels}
    return plot_report(points, positions, questions, out_dir)


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, *, plots: bool = True,
                 baseline: str = DEFAULT_BASELINE, seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES,
                 confidence: float = DEFAULT_CONFIDENCE) -> tuple[str, list[Path]]:
    """Load runs, write ``report.md``, ``report.json`` (and the plots) into ``out_dir``; return (markdown, files)."""
    runs = _unique_labels([load_run(p) for p in run_dirs])
    report = build_report(runs, baseline=baseline, seed=seed, resamples=resamples, confidence=confidence)
    table = report.markdown()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "report.md", out_dir / "report.json"
    atomic_write_text(md, table)
    atomic_write_json(js, report.to_dict())
    files = [md, js] + (plot_runs(runs, out_dir) if plots else [])
    return table, files
