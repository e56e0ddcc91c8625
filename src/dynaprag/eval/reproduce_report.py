"""The report of a reproduction: ``reproduce.md`` (ours beside the paper's numbers, with costs and
caveats), the best method per dataset, and the plot. :mod:`dynaprag.eval.reproduce` runs the cells
and calls these on their rows.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

from dynaprag.eval.calibrate import CalibratedThreshold
from dynaprag.eval.published import BASELINE, PublishedTable

__all__ = ["METRIC_NAMES", "best_per_dataset", "markdown", "plot_reproduction"]

METRIC_NAMES = {"em": "EM", "f1": "F1", "acc": "Accuracy", "cover_em": "Cover EM"}


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def best_per_dataset(table: PublishedTable, rows: Sequence[dict]) -> list[dict]:
    """Per dataset, the method other than the baseline with the best score on the headline metric.

    The headline metric is the dataset's last (F1 where the paper reports EM and F1). Each entry
    gives the ratio of its score to the baseline's on the same questions and the paired verdict,
    so "method X beats sr-rag by 15 %" is read with its interval, never from point estimates.
    """
    best = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        metric = table.metrics[dataset][-1]
        group = [r for r in rows if r["dataset"] == dataset and r["metric"] == metric]
        rivals = [r for r in group if r["method"] != BASELINE and "ours" in r and "diff" in r]
        if not rivals:
            continue
        top = max(rivals, key=lambda r: r["ours"])
        base = top["ours"] - top["diff"]  # the baseline's mean on the paired questions
        best.append({"dataset": dataset, "metric": metric, "method": top["method"], "ours": top["ours"],
                     "baseline": base, "ratio": top["ours"] / base if base > 0 else math.inf,
                     "diff": top["diff"], "diff_ci_low": top["diff_ci_low"], "diff_ci_high": top["diff_ci_high"],
                     "p_value": top["p_value"], "verdict": top["verdict"], "n_paired": top["n_paired"]})
    return best


def _best_lines(table: PublishedTable, rows: Sequence[dict]) -> list[str]:
    lines = []
    for b in best_per_dataset(table, rows):
        name = METRIC_NAMES.get(b["metric"], b["metric"])
        lines.append(f"* {b['dataset']}: best {name} other than {BASELINE} is {b['method']}, {b['ours']:.3f} = "
                     f"{b['ratio']:.2f} x {BASELINE}'s {b['baseline']:.3f} on the same {b['n_paired']} questions; "
                     f"Δ {b['diff']:+.3f} [{b['diff_ci_low']:+.3f}, {b['diff_ci_high']:+.3f}], p {b['p_value']:.3f}: "
                     f"{b['verdict']}.")
    return ["## Best method per dataset", "", *lines, ""] if lines else []


def markdown(table: PublishedTable, rows: Sequence[dict], *, backbone: str, model: str,
             overrides: Sequence[str] = (), limit: int | None = None,
             calibrated: Mapping[tuple[str, str], CalibratedThreshold] | None = None,
             batch_size: int | None = None, warnings: Sequence[str] = ()) -> str:
    """The side-by-side table with its citation, the backbone caveat and the notes."""
    calibrated = calibrated or {}
    s = table.source
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    lines = [f"# Reproducing {table.name}: {table.title}", "",
             f"Published: {table.citation}. Numbers read from {s['read_from']}.",
             *([f"Paper's setting: {s['note']}"] if s.get("note") else []), "",
             f"**Our model ({model}) is not the paper's backbone ({backbone})**, and our corpus and question "
             "sample differ from the paper's: compare the ordering of methods and each method's difference to "
             f"{BASELINE}, not the absolute numbers.",
             f"Ours: {'the first ' + str(limit) if limit else 'all'} questions of each dataset"
             + (f"; overrides after the paper's settings: {' '.join(overrides)}" if overrides else "")
             + (f"; {batch_size} questions decoded together (answers may differ from batch 1's at bf16 near-ties)"
                if batch_size and batch_size > 1 else "") + ".", "", _datasets_line(table, rows), ""]
    if warnings:
        lines += ["Thresholds not set for our model: " + " ".join(warnings), ""]
    if calibrated:
        lines += ["Thresholds calibrated for our model on held-out questions (θ marked in the table): "
                  + "; ".join(f"{c.method} on {c.dataset} θ = {c.theta:.4g} from {Path(c.path).name} "
                              f"(fitted on questions from {c.held_out_from} on)" for c in calibrated.values())
                  + ". The paper's θ was set for its backbone; on another model's score scale it may fire on "
                    "every draft or never.", ""]
    if table.unavailable:
        lines += [f"Published numbers unavailable: {table.unavailable}", ""]
    head = ["Dataset", "Method (paper's name)", "Metric", "N", "Ours [95 % CI]", f"Δ vs {BASELINE} [95 % CI]", "p",
            "Verdict", f"Published ({backbone})", "Retrievals/q", "Gen tok/q", "Cost"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ours = f"{_num(r.get('ours'))} [{_num(r.get('ours_ci_low'))}, {_num(r.get('ours_ci_high'))}]" \
            if "ours" in r else "–"
        diff = f"{r['diff']:+.3f} [{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}]" if "diff" in r else "–"
        p = ("<0.001" if r["p_value"] < 0.001 else f"{r['p_value']:.3f}") if "p_value" in r else "–"
        published = _num(r["published"], 4) if r["published"] is not None else "unavailable"
        cal = calibrated.get((r["dataset"], r["method"]))
        theta = f", θ {cal.theta:.4g}" if cal else ""
        lines.append(f"| {r['dataset']} | {r['method']} ({r['paper_method']}){theta} "
                     f"| {METRIC_NAMES.get(r['metric'], r['metric'])}"
                     f" | {r['n']} | {ours} | {diff} | {p} | {r.get('verdict', '–')} | {published} "
                     f"| {_num(r.get('retrievals_per_question'), 2)} | {_num(r.get('generated_tokens_per_question'), 1)} "
                     f"| {r.get('cost', '–')} |")
    lines += ["", *_best_lines(table, rows)]
    lines += ["Ours: mean with its percentile bootstrap interval over our questions. Δ: paired on the questions "
              "both runs answered; p: two-sided paired sign-flip test; *within noise* unless the interval excludes 0 "
              "and p < 0.05 (dynaprag.eval.stats). Retrievals/q and Gen tok/q: per question of the run. Cost: "
              "seconds per question (s/q) for runs answered one at a time; for batched runs questions per hour "
              "(q/h), since a question's seconds inside a batch are its latency among the others'.", "",
              "## Method mapping", ""]
    lines += [f"* `{m.ours}` = the paper's {m.paper}" + (f": {m.note}" if m.note else "") for m in table.methods]
    if table.settings:
        applied = {k: v for k, v in table.settings.items() if k == "all" or k in datasets}
        lines += ["", f"Reference settings applied to our runs: {applied} (from {table.settings.get('source', '?')})."]
    for version in table.other_versions:
        cells = [f"{d} {m} {METRIC_NAMES.get(k, k)} {v}" for d, by_m in version["published"].get(backbone, {}).items()
                 if d in datasets for m, by_k in by_m.items() for k, v in by_k.items()]
        if cells:
            lines += ["", f"{version['version']} prints other numbers for {backbone} ({version['read_from']}): "
                          + "; ".join(cells) + "."]
    return "\n".join(lines) + "\n"


def _datasets_line(table: PublishedTable, rows: Sequence[dict]) -> str:
    """Which of the table's datasets ran, with how many questions, and which did not."""
    ran = {}
    for r in rows:
        ran[r["dataset"]] = max(ran.get(r["dataset"], 0), r["n"])
    text = "Datasets run: " + ", ".join(f"{d} ({n} question{'' if n == 1 else 's'})" for d, n in ran.items())
    missing = [d for d in table.datasets if d not in ran]
    return text + (f"; not run: {', '.join(missing)}." if missing else ".")


def plot_reproduction(table: PublishedTable, rows: Sequence[dict], out_dir: str | Path, *, backbone: str,
                      model: str) -> list[Path]:
    """Per dataset, ours (bars with 95 % intervals) beside published (hatched) for its first metric; PNG + SVG."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'dynaprag[plots]'") from None
    from dynaprag.eval.plots import save_figure

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig = Figure(figsize=(max(5.0, 3.2 * len(datasets)), 4.0))
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets):
        metric = table.metrics[dataset][-1]  # F1 where the paper reports EM and F1
        group = [r for r in rows if r["dataset"] == dataset and r["metric"] == metric]
        xs = list(range(len(group)))
        ours = [r.get("ours", 0.0) for r in group]
        err = [[max(r.get("ours", 0) - r.get("ours_ci_low", 0), 0) for r in group],
               [max(r.get("ours_ci_high", 0) - r.get("ours", 0), 0) for r in group]]
        ax.bar([x - 0.2 for x in xs], ours, 0.4, yerr=err, capsize=3, label=f"ours ({model})")
        pub = [r["published"] for r in group]
        ax.bar([x + 0.2 for x in xs], [p or 0.0 for p in pub], 0.4, hatch="//", fill=False,
               label=f"published ({backbone})")
        for x, p in zip(xs, pub):
            if p is None:
                ax.text(x + 0.2, 0.01, "n/a", ha="center", fontsize="x-small", rotation=90)
        ax.set_xticks(xs, [r["method"] for r in group], rotation=30, ha="right")
        ax.set_ylim(0, 1.0)
        ax.set_title(f"{dataset}: {METRIC_NAMES.get(metric, metric)}", fontsize="medium")
    axes[0].set_ylabel("score (error bars: our 95 % bootstrap interval)")
    axes[0].legend(fontsize="x-small")
    fig.suptitle(f"{table.name}: ours vs {table.source['table']}", fontsize="medium")
    return save_figure(fig, Path(out_dir) / "reproduce")
