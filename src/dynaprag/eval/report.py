"""Reports over run folders: a markdown table of methods x datasets and PNG plots.

``dynaprag report RUN_DIR...`` reads each folder's ``config.json``, ``summary.json`` and
``records.jsonl`` and writes

* ``report.md``: one row per run (method, dataset) with EM, F1, yes/no accuracy, gold-passage
  recall, retrievals, generated tokens and seconds per question;
* ``f1_per_method.png``: F1 per method, one bar per dataset;
* ``f1_vs_seconds.png``: F1 against seconds per question (the quality/cost trade-off);
* ``retrieval_positions.png``: where in the answer retrieval fired, as a fraction of the final
  answer's tokens (0 = before the first token, 1 = at the end), one histogram per method.

Summaries are recomputed from the records, so a report never disagrees with its data, and
cover the questions of the run's config only: records beyond a shortened ``limit`` stay on disk
but are left out (see :func:`dynaprag.eval.runner.records_within_limit`). Files are written
atomically (:mod:`dynaprag.files`).

>>> print(report_table([load_run("runs/hotpot-dragin")]))  # doctest: +SKIP
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from dynaprag.eval.runner import CONFIG, RECORDS, RunError, read_records, records_within_limit, summarize
from dynaprag.files import atomic_write_bytes, atomic_write_text

__all__ = ["Run", "load_run", "plot_runs", "report_table", "retrieval_positions", "write_report"]

COLUMNS = (("em", "EM"), ("f1", "F1"), ("cover_em", "Cover EM"), ("acc", "Acc"), ("recall", "Recall"),
           ("retrievals_per_question", "Retrievals/q"), ("generated_tokens_per_question", "Gen tok/q"),
           ("prompt_tokens_per_question", "Prompt tok/q"), ("s_per_question", "s/q"))


@dataclass
class Run:
    """One run folder: its label, resolved config, the records its config covers and their summary."""

    path: Path
    label: str
    dataset: str
    config: dict
    records: list[dict]
    summary: dict


def load_run(path: str | Path) -> Run:
    """Read a run folder written by :func:`dynaprag.eval.runner.evaluate`."""
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise RunError(f"{path} is not a run folder (no {CONFIG}); pass folders written by `dynaprag eval`")
    config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    on_disk = read_records(path / RECORDS)
    records = records_within_limit(on_disk, config)
    summary = summarize(records, config, beyond_limit=len(on_disk) - len(records))
    return Run(path, str(summary.get("method") or path.name), str(config.get("dataset") or ""),
               config, records, summary)


def _unique_labels(runs: Sequence[Run]) -> list[Run]:
    seen: dict[tuple[str, str], int] = {}
    for run in runs:
        seen[(run.label, run.dataset)] = seen.get((run.label, run.dataset), 0) + 1
    for run in runs:
        if seen[(run.label, run.dataset)] > 1:
            run.label = f"{run.label} ({run.path.name})"
    return list(runs)


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def report_table(runs: Sequence[Run]) -> str:
    """A markdown table, one row per run, sorted by dataset then method."""
    header = ["Dataset", "Method", "N"] + [name for _, name in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in sorted(runs, key=lambda r: (r.dataset, r.label)):
        cells = [run.dataset, run.label, str(run.summary["questions"])]
        cells += [_fmt(run.summary.get(key)) for key, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def retrieval_positions(records: Sequence[dict]) -> list[float]:
    """Each retrieval's position as a fraction of its final answer's kept tokens, in [0, 1]."""
    out = []
    for record in records:
        trace = record.get("trace", {})
        length = max(len(trace.get("tokens", [])), 1)
        out += [min(r.get("position", 0) / length, 1.0) for r in trace.get("retrievals", [])]
    return out


def plot_runs(runs: Sequence[Run], out_dir: str | Path) -> list[Path]:
    """Write the three PNG plots into ``out_dir``; returns their paths."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'dynaprag[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    methods = sorted({r.label for r in runs})
    datasets = sorted({r.dataset for r in runs})
    by_key = {(r.label, r.dataset): r for r in runs}
    paths = []

    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(methods) + 2), 4))
    width = 0.8 / max(len(datasets), 1)
    for j, dataset in enumerate(datasets):
        xs = [i + j * width for i, m in enumerate(methods) if (m, dataset) in by_key]
        ys = [by_key[(m, dataset)].summary.get("f1") or 0.0 for m in methods if (m, dataset) in by_key]
        ax.bar(xs, ys, width, label=dataset)
    ax.set_xticks([i + width * (len(datasets) - 1) / 2 for i in range(len(methods))], methods, rotation=30, ha="right")
    ax.set_ylabel("F1")
    ax.set_title("F1 per method")
    ax.legend(fontsize="small")
    paths.append(_save(fig, out_dir / "f1_per_method.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    markers = "osD^vP*X"
    for j, dataset in enumerate(datasets):
        group = [r for r in runs if r.dataset == dataset]
        xs = [r.summary.get("s_per_question") or 0.0 for r in group]
        ys = [r.summary.get("f1") or 0.0 for r in group]
        ax.scatter(xs, ys, marker=markers[j % len(markers)], label=dataset)
        for run, x, y in zip(group, xs, ys):
            ax.annotate(run.label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    ax.set_xlim(left=0)
    ax.set_ylim(0, max([r.summary.get("f1") or 0.0 for r in runs] + [0.05]) * 1.15)
    ax.set_xlabel("seconds per question")
    ax.set_ylabel("F1")
    ax.set_title("F1 vs. cost")
    ax.legend(fontsize="small")
    paths.append(_save(fig, out_dir / "f1_vs_seconds.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    plotted = False
    for method in methods:
        positions = [p for r in runs if r.label == method for p in retrieval_positions(r.records)]
        if positions:
            ax.hist(positions, bins=10, range=(0, 1), histtype="step", linewidth=1.5, label=method)
            plotted = True
    if not plotted:
        ax.text(0.5, 0.5, "no retrievals in these runs", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("position in the answer (fraction of final answer tokens)")
    ax.set_ylabel("retrievals")
    ax.set_title("Where retrieval fired")
    if plotted:
        ax.legend(fontsize="small")
    paths.append(_save(fig, out_dir / "retrieval_positions.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    png = io.BytesIO()
    fig.tight_layout()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())
    return path


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, *, plots: bool = True) -> tuple[str, list[Path]]:
    """Load runs, write ``report.md`` (and the plots) into ``out_dir``; return (table, files)."""
    runs = _unique_labels([load_run(p) for p in run_dirs])
    table = report_table(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "report.md"
    atomic_write_text(md, table)
    files = [md] + (plot_runs(runs, out_dir) if plots else [])
    return table, files
