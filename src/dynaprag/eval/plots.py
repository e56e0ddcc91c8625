"""Report plots: quality with its uncertainty against cost, and where retrieval fired.

Each plot is written as PNG (to look at) and SVG (to put in a paper or zoom into):

* ``f1_per_method``: F1 per method, one bar per dataset, 95 % bootstrap intervals as error bars;
* ``f1_vs_seconds`` and ``f1_vs_retrievals``: the cost–quality frontier. Each run is a point
  (F1 against seconds per question, or against retrievals per question) with its interval as
  an error bar; the dashed staircase per dataset joins the runs no other run beats on both
  axes (:func:`pareto_frontier`). A method below the staircase costs more for less; two points
  whose error bars overlap heavily are not shown to differ (the paired table says whether they do);
* ``retrieval_positions``: where in the answer retrieval fired, as a fraction of the final
  answer's tokens (0 = before the first token), in retrievals per question so methods evaluated
  on different numbers of questions compare.

The functions take plain numbers (:class:`PlotPoint`, position lists), not run folders, so any
table of results can be plotted. matplotlib is imported on use (extra ``plots``) through its
object API (no pyplot state), and files are written atomically.

>>> p = PlotPoint("sr-rag", "hotpotqa", f1=0.31, f1_low=0.22, f1_high=0.40, s_per_question=1.2,
...               retrievals_per_question=1.0)
>>> paths = plot_report([p], {"sr-rag": [0.0]}, {"sr-rag": 1}, "report/")  # doctest: +SKIP
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from dynaprag.files import atomic_write_bytes

__all__ = ["COSTS", "PlotPoint", "pareto_frontier", "plot_f1_per_method", "plot_frontier", "plot_report",
           "plot_retrieval_positions", "save_figure"]

#: cost axes of the frontier plots: attribute of :class:`PlotPoint` -> (file stem, axis label)
COSTS = {"s_per_question": ("f1_vs_seconds", "seconds per question (batched runs: 3600 / questions per hour)"),
         "retrievals_per_question": ("f1_vs_retrievals", "retrievals per question")}
_MARKERS = "osD^vP*X"


@dataclass(frozen=True)
class PlotPoint:
    """One run as plotted: its F1 with the interval and its costs per question."""

    label: str
    dataset: str
    f1: float
    f1_low: float
    f1_high: float
    s_per_question: float
    retrievals_per_question: float


def pareto_frontier(costs: Sequence[float], qualities: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (cost <= and quality >=, one strictly), by cost.

    >>> pareto_frontier([1.0, 2.0, 3.0, 2.5], [0.2, 0.4, 0.3, 0.5])
    [0, 1, 3]
    """
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -qualities[i]))
    frontier, best = [], float("-inf")
    for i in order:
        if qualities[i] > best:
            frontier.append(i)
            best = qualities[i]
    return frontier


def _figure(width: float = 6.0, height: float = 4.0):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'dynaprag[plots]'") from None
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Write ``fig`` as ``stem.png`` and ``stem.svg`` (reproducible bytes for the SVG); return both paths."""
    import matplotlib

    stem = Path(stem)
    fig.tight_layout()
    paths = []
    with matplotlib.rc_context({"svg.hashsalt": "dynaprag", "svg.fonttype": "none"}):
        for fmt, options in (("png", {"dpi": 120}), ("svg", {"metadata": {"Date": None}})):
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, **options)
            path = stem.with_suffix(f".{fmt}")
            atomic_write_bytes(path, buffer.getvalue())
            paths.append(path)
    return paths


def _yerr(points: Sequence[PlotPoint]) -> list[list[float]]:
    return [[max(p.f1 - p.f1_low, 0.0) for p in points], [max(p.f1_high - p.f1, 0.0) for p in points]]


def _top(points: Sequence[PlotPoint]) -> float:
    return max([p.f1_high for p in points] + [0.05]) * 1.15


def plot_f1_per_method(points: Sequence[PlotPoint], out_dir: str | Path) -> list[Path]:
    """Bars of F1 per method, one colour per dataset, with 95 % intervals as error bars."""
    methods = sorted({p.label for p in points})
    datasets = sorted({p.dataset for p in points})
    fig, ax = _figure(max(5.0, 1.2 * len(methods) + 2))
    width = 0.8 / max(len(datasets), 1)
    for j, dataset in enumerate(datasets):
        group = sorted((p for p in points if p.dataset == dataset), key=lambda p: methods.index(p.label))
        xs = [methods.index(p.label) + j * width for p in group]
        ax.bar(xs, [p.f1 for p in group], width, yerr=_yerr(group), capsize=3, label=dataset)
    ax.set_xticks([i + width * (len(datasets) - 1) / 2 for i in range(len(methods))], methods,
                  rotation=30, ha="right")
    ax.set_ylim(0, _top(points))
    ax.set_ylabel("F1 (error bars: 95 % bootstrap interval)")
    ax.set_title("F1 per method")
    ax.legend(fontsize="small")
    return save_figure(fig, Path(out_dir) / "f1_per_method")


def plot_frontier(points: Sequence[PlotPoint], out_dir: str | Path, cost: str = "s_per_question") -> list[Path]:
    """F1 against a cost per question, error bars for F1, and each dataset's frontier dashed."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")
    stem, xlabel = COSTS[cost]
    fig, ax = _figure()
    for j, dataset in enumerate(sorted({p.dataset for p in points})):
        group = [p for p in points if p.dataset == dataset]
        xs = [getattr(p, cost) for p in group]
        ys = [p.f1 for p in group]
        bars = ax.errorbar(xs, ys, yerr=_yerr(group), fmt=_MARKERS[j % len(_MARKERS)], capsize=3, label=dataset)
        best = pareto_frontier(xs, ys)
        if len(best) > 1:
            ax.plot([xs[i] for i in best], [ys[i] for i in best], linestyle="--", linewidth=1,
                    drawstyle="steps-post", color=bars[0].get_color(), alpha=0.6)
        for point, x, y in zip(group, xs, ys):
            ax.annotate(point.label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize="small")
    ax.set_xlim(left=-0.05 * max([getattr(p, cost) for p in points] + [1.0]))
    ax.set_ylim(0, _top(points))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("F1 (error bars: 95 % bootstrap interval)")
    ax.set_title(f"F1 against {xlabel} (dashed: frontier; up and left is better)", fontsize="medium")
    ax.legend(fontsize="small")
    return save_figure(fig, Path(out_dir) / stem)


def plot_retrieval_positions(positions: Mapping[str, Sequence[float]], questions: Mapping[str, int],
                             out_dir: str | Path) -> list[Path]:
    """Histogram per method of where retrieval fired, in retrievals per question (``questions[method]``)."""
    fig, ax = _figure()
    plotted = False
    for method in sorted(positions):
        values = list(positions[method])
        if values:
            weight = 1.0 / max(questions.get(method, 1), 1)
            ax.hist(values, bins=10, range=(0, 1), weights=[weight] * len(values), histtype="step",
                    linewidth=1.5, label=method)
            plotted = True
    if plotted:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no retrievals in these runs", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("position in the answer (fraction of the final answer's tokens)")
    ax.set_ylabel("retrievals per question")
    ax.set_title("Where retrieval fired")
    return save_figure(fig, Path(out_dir) / "retrieval_positions")


def plot_report(points: Sequence[PlotPoint], positions: Mapping[str, Sequence[float]],
                questions: Mapping[str, int], out_dir: str | Path) -> list[Path]:
    """Every report plot into ``out_dir`` (created) as PNG and SVG; returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = plot_f1_per_method(points, out_dir)
    for cost in COSTS:
        paths += plot_frontier(points, out_dir, cost)
    return paths + plot_retrieval_positions(positions, questions, out_dir)
