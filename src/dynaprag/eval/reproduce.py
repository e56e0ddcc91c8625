"""Reproduce a published table: its methods x datasets on the user's model, beside the paper's numbers.

``dynaprag reproduce TABLE`` runs every (method, dataset) cell of a published table through the
ordinary eval API (:func:`dynaprag.eval.experiment.resolve` + :func:`~dynaprag.eval.experiment.run`
into ``OUT/<dataset>/<method>/``, each a resumable run folder), then writes

* ``reproduce.md``: per dataset, method and metric the paper reports, our score with its 95 %
  bootstrap interval, our paired difference to ``sr-rag`` on the same questions (interval,
  sign-flip p-value, verdict; :mod:`dynaprag.eval.stats`), and the published number of the chosen
  backbone, with the citation and a line saying that our model is not the paper's backbone;
* ``reproduce.json``: the same as flat rows (``ours_f1``, ``published_f1``, ...);
* ``reproduce_<metric>.png``/``.svg``: ours (with interval) against published, per method and dataset.

The tables live in ``dynaprag/data/published_tables.yaml`` (read and checked by
:mod:`dynaprag.eval.published`): the paper, table and where each
number was read; which of our presets stands for which paper row (the DRAGIN paper's "FLARE"
baseline is the DRAGIN repository's ``method: token``, our ``token-rag``); the datasets and
metrics; the reference settings applied to our runs (``k``, ``max_new_tokens`` per dataset); and
the numbers per backbone. A table whose numbers could not be read from a citable source keeps its
structure, shows "unavailable" and says why: no number is ever filled in by this module.

Before anything runs, every dataset must be present (``DATA_DIR/questions/NAME.jsonl`` or a
``questions`` file, and its corpus); otherwise :class:`ReproduceError` names what to download.

>>> sorted(table_names())[:2]
['dragin-table2', 'prag-paper']
>>> result = reproduce("dragin-table2", model="qwen2.5-coder-0.5b", data_dir="../shared/data",
...                    limit=100, out="runs/dragin")          # doctest: +SKIP
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from dynaprag.eval.calibrate import CalibratedThreshold
from dynaprag.eval.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, bootstrap_interval, pair_by_id, paired_comparison
from dynaprag.eval.published import BASELINE, MethodMap, PublishedTable, TableError, load_tables, packaged_tables
from dynaprag.files import atomic_write_json, atomic_write_text

__all__ = ["BASELINE", "MethodMap", "PublishedTable", "ReproduceError", "ReproduceResult", "TableError",
           "get_table", "load_tables", "missing_data", "reproduce", "table_names", "write_outputs"]

METRIC_NAMES = {"em": "EM", "f1": "F1", "acc": "Accuracy", "cover_em": "Cover EM"}


class ReproduceError(ValueError):
    """A reproduction that cannot run as asked (missing dataset, unknown backbone); says what to do."""


def table_names() -> list[str]:
    """The packaged tables' names."""
    return list(packaged_tables())


def get_table(name: str) -> PublishedTable:
    """A packaged table by name; an unknown name lists the known ones."""
    tables = packaged_tables()
    if name not in tables:
        raise ReproduceError(f"unknown table {name!r}; choose one of: {', '.join(tables)} "
                             "(dynaprag reproduce --list)")
    return tables[name]


def missing_data(datasets: Sequence[str], data_dir: str | Path | None, questions: Mapping[str, str] | None = None,
                 overrides: Sequence[str] = ()) -> list[str]:
    """One line per dataset that cannot run: which file is missing and how to get it."""
    from dynaprag.eval.datasets import DATASETS, corpus_path, questions_path

    questions = questions or {}
    has_corpus_override = any(o.startswith("retrieval.corpus=") for o in overrides)
    lines = []
    for name in datasets:
        spec = DATASETS.get(name)
        qfile = Path(questions[name]) if name in questions else (questions_path(data_dir, name) if data_dir else None)
        if qfile is None or not qfile.is_file():
            lines.append(f"{name}: question file {qfile or 'DATA_DIR/questions/' + name + '.jsonl'} not found; "
                         f"download the official release with `dynaprag data download {name}` and pass it as "
                         f"--questions {name}=FILE (or put it at DATA_DIR/questions/{name}.jsonl)")
            continue
        corpus = corpus_path(data_dir, name) if data_dir else None
        if has_corpus_override:
            continue
        if corpus is None:
            lines.append(f"{name}: no retrieval corpus in the data dir for this dataset; pass retrieval.corpus=FILE "
                         "(e.g. the DPR Wikipedia dump psgs_w100.tsv the papers retrieve from)")
        elif not corpus.is_file():
            lines.append(f"{name}: corpus {corpus} not found; put the dataset's passages there ({spec.corpus})")
    return lines


@dataclass
class ReproduceResult:
    """What a reproduction wrote: its rows, the Markdown, the files, and the run folders."""

    table: PublishedTable
    backbone: str
    rows: list[dict]
    markdown: str
    files: list[Path]
    runs: dict[tuple[str, str], Path] = field(default_factory=dict)


def _never(question: str):
    raise AssertionError("a complete run was asked for an answer")


def calibrated_thresholds(paths: Sequence[str | Path], *, table: PublishedTable, datasets: Sequence[str],
                          model: str, limit: int | None) -> dict[tuple[str, str], CalibratedThreshold]:
    """``(dataset, method) -> θ`` from ``dynaprag calibrate`` configs, refusing any that cannot apply.

    A threshold fitted for another model, or on questions this reproduction evaluates (its config's
    ``limit`` below ``limit``), would make the reported number untrustworthy, so both are errors.
    """
    from dynaprag.eval.calibrate import read_threshold

    methods = {m.ours for m in table.methods}
    found: dict[tuple[str, str], CalibratedThreshold] = {}
    for path in paths:
        cal = read_threshold(path)
        if cal.method not in methods or cal.dataset not in datasets:
            raise ReproduceError(f"{path}: calibrates {cal.method} on {cal.dataset}, which this reproduction of "
                                 f"{table.name} does not run (methods {', '.join(sorted(methods))}; datasets "
                                 f"{', '.join(datasets)})")
        if cal.model != model:
            raise ReproduceError(f"{path}: θ was fitted for model {cal.model!r}, not {model!r}; calibrate again "
                                 f"with --model {model}")
        if cal.held_out_from is None or limit is None or limit > cal.held_out_from:
            raise ReproduceError(f"{path}: its calibration split starts at question {cal.held_out_from or 0}, so "
                                 f"--limit must be at most {cal.held_out_from or 0} (evaluating "
                                 f"{limit or 'all'} questions would score questions θ was fitted on)")
        if (cal.dataset, cal.method) in found:
            raise ReproduceError(f"{path}: a second calibration of {cal.method} on {cal.dataset} "
                                 f"(first: {found[(cal.dataset, cal.method)].path})")
        found[(cal.dataset, cal.method)] = cal
    return found


def _run_cell(dataset: str, method: str, *, table: PublishedTable, data_dir, questions, limit, model, dtype,
              overrides: Sequence[str], out: Path, models: dict, retrievers: dict, progress: bool,
              batch_size: int | None = None) -> Path:
    """One (dataset, method) run into ``out``; the model and retriever are loaded once and shared."""
    from dynaprag.config import to_dict
    from dynaprag.eval.experiment import load_run_examples, resolve, resolved_dict, run
    from dynaprag.eval.runner import RECORDS, evaluate, read_records

    settings = table.overrides(dataset) + [f"model={model}"] + ([f"dtype={dtype}"] if dtype else [])
    run_cfg, pipe_cfg = resolve(dataset, data_dir=str(data_dir) if data_dir else None,
                                questions=questions.get(dataset), method=method, limit=limit,
                                overrides=[*settings, *overrides], batch_size=batch_size)
    examples = load_run_examples(run_cfg, pipe_cfg.retrieval.corpus)
    done = {r["id"] for r in read_records(out / RECORDS)} if (out / RECORDS).is_file() else set()
    if all(ex.id in done for ex in examples):  # checks the config still matches, answers nothing
        evaluate(examples, _never, out, config=resolved_dict(run_cfg, pipe_cfg), progress=False)
        return out
    key = (pipe_cfg.model, pipe_cfg.dtype)
    if key not in models:
        from dynaprag.lm import load_model

        models[key] = load_model(pipe_cfg.model, dtype=pipe_cfg.dtype)
    rkey = repr(to_dict(pipe_cfg.retrieval))
    if rkey not in retrievers:
        from dynaprag.retrieval import build_retriever

        retrievers[rkey] = build_retriever(pipe_cfg.retrieval)
    run(run_cfg, pipe_cfg, out, lm=models[key], retriever=retrievers[rkey], progress=progress)
    return out


def reproduce(table: str | PublishedTable, *, model: str, data_dir: str | Path | None, out: str | Path,
              limit: int | None = None, datasets: Sequence[str] | None = None, backbone: str | None = None,
              questions: Mapping[str, str] | None = None, overrides: Sequence[str] = (), dtype: str | None = None,
              plots: bool = True, progress: bool = True, seed: int = DEFAULT_SEED,
              resamples: int = DEFAULT_RESAMPLES, methods: Sequence[str] | None = None,
              calibrated: Sequence[str | Path] = (), batch_size: int | None = None) -> ReproduceResult:
    """Run ``table``'s methods x ``datasets`` (default: the table's) on ``model`` into ``out``; write the outputs.

    ``overrides`` (``key=value``) apply to every run after the table's reference settings;
    ``calibrated`` are ``dynaprag calibrate`` configs whose θ replaces the preset's for their
    (method, dataset) cell only (:func:`calibrated_thresholds` refuses one fitted for another
    model or on evaluated questions); ``methods`` runs a subset (two processes can split a
    table; a later call without it finds their finished runs); ``batch_size`` is ``eval``'s.
    ``backbone`` picks the published column (default: the paper's first backbone). Every dataset
    is checked before anything loads; a missing one raises :class:`ReproduceError` naming what
    to download. Runs already complete in ``out`` are reused without loading the model.
    """
    spec = table if isinstance(table, PublishedTable) else get_table(table)
    datasets = tuple(datasets or spec.datasets)
    if unknown := [d for d in datasets if d not in spec.metrics]:
        raise ReproduceError(f"{spec.name}: datasets {unknown} are not in this table; choose from "
                             f"{', '.join(spec.metrics)}")
    backbone = backbone or spec.backbones[0]
    if backbone not in spec.backbones:
        raise ReproduceError(f"{spec.name}: backbone {backbone!r} is not in the paper; choose one of: "
                             f"{', '.join(spec.backbones)}")
    questions = dict(questions or {})
    if missing := missing_data(datasets, data_dir, questions, overrides):
        raise ReproduceError(f"table {spec.name} needs datasets that are not present: " + "; ".join(missing))
    chosen = [m.ours for m in spec.methods]
    if methods:
        if unknown := [m for m in methods if m not in chosen]:
            raise ReproduceError(f"{spec.name}: methods {unknown} are not in this table; choose from "
                                 f"{', '.join(chosen)}")
        chosen = [m for m in chosen if m in methods]
    thetas = calibrated_thresholds(calibrated, table=spec, datasets=datasets, model=model, limit=limit)
    out = Path(out)
    models: dict = {}
    retrievers: dict = {}
    runs: dict[tuple[str, str], Path] = {}
    for dataset in datasets:
        for method in chosen:
            cal = thetas.get((dataset, method))
            runs[(dataset, method)] = _run_cell(
                dataset, method, table=spec, data_dir=data_dir, questions=questions, limit=limit, model=model,
                dtype=dtype, overrides=[*overrides, *([f"trigger.theta={cal.theta!r}"] if cal else [])],
                out=out / dataset / method, models=models, retrievers=retrievers, progress=progress,
                batch_size=batch_size)
    return write_outputs(spec, runs, out, backbone=backbone, model=model, plots=plots, seed=seed,
                         resamples=resamples, overrides=overrides, limit=limit, calibrated=thetas,
                         batch_size=batch_size)


def build_rows(table: PublishedTable, runs: Mapping[tuple[str, str], Path], *, backbone: str,
               seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES) -> list[dict]:
    """One flat row per (dataset, method, metric): ours with its interval, Δ to sr-rag, published."""
    from dynaprag.eval.report import load_run

    loaded = {key: load_run(path) for key, path in runs.items()}
    rows = []
    for (dataset, method), run in loaded.items():
        base = loaded.get((dataset, BASELINE))
        for metric in table.metrics[dataset]:
            scores = run.scores(metric)
            row: dict[str, Any] = {"dataset": dataset, "method": method, "paper_method": table.paper_name(method),
                                   "metric": metric, "n": len(scores), "run": str(run.path),
                                   "published": table.value(backbone, dataset, method, metric) if table.published
                                   else None, "backbone": backbone}
            if scores:
                iv = bootstrap_interval(list(scores.values()), resamples=resamples, seed=seed)
                row.update(ours=iv.mean, ours_ci_low=iv.low, ours_ci_high=iv.high)
            if base is not None and method != BASELINE and scores:
                ids, a, b = pair_by_id(scores, base.scores(metric))
                if ids:
                    c = paired_comparison(a, b, resamples=resamples, seed=seed)
                    row.update(diff=c.difference, diff_ci_low=c.low, diff_ci_high=c.high, p_value=c.p_value,
                               verdict=c.verdict, n_paired=c.n)
            rows.append(row)
    order = {m.ours: i for i, m in enumerate(table.methods)}
    return sorted(rows, key=lambda r: (r["dataset"], order[r["method"]], r["metric"]))


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
             batch_size: int | None = None) -> str:
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
                if batch_size and batch_size > 1 else "") + ".", ""]
    if calibrated:
        lines += ["Thresholds calibrated for our model on held-out questions (θ marked in the table): "
                  + "; ".join(f"{c.method} on {c.dataset} θ = {c.theta:.4g} from {Path(c.path).name} "
                              f"(fitted on questions from {c.held_out_from} on)" for c in calibrated.values())
                  + ". The paper's θ was set for its backbone; on another model's score scale it may fire on "
                    "every draft or never.", ""]
    if table.unavailable:
        lines += [f"Published numbers unavailable: {table.unavailable}", ""]
    head = ["Dataset", "Method (paper's name)", "Metric", "N", "Ours [95 % CI]", f"Δ vs {BASELINE} [95 % CI]", "p",
            "Verdict", f"Published ({backbone})"]
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
                     f" | {r['n']} | {ours} | {diff} | {p} | {r.get('verdict', '–')} | {published} |")
    lines += ["", *_best_lines(table, rows)]
    lines += ["Ours: mean with its percentile bootstrap interval over our questions. Δ: paired on the questions "
              "both runs answered; p: two-sided paired sign-flip test; *within noise* unless the interval excludes 0 "
              "and p < 0.05 (dynaprag.eval.stats).", "", "## Method mapping", ""]
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


def write_outputs(table: PublishedTable, runs: Mapping[tuple[str, str], Path], out: str | Path, *, backbone: str,
                  model: str, plots: bool = True, seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES,
                  overrides: Sequence[str] = (), limit: int | None = None,
                  calibrated: Mapping[tuple[str, str], CalibratedThreshold] | None = None,
                  batch_size: int | None = None) -> ReproduceResult:
    """``reproduce.md``, ``reproduce.json`` and the plot from finished run folders."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    calibrated = calibrated or {}
    rows = build_rows(table, runs, backbone=backbone, seed=seed, resamples=resamples)
    for row in rows:
        if cal := calibrated.get((row["dataset"], row["method"])):
            row.update(theta=cal.theta, theta_from=cal.path)
    text = markdown(table, rows, backbone=backbone, model=model, overrides=overrides, limit=limit,
                    calibrated=calibrated, batch_size=batch_size)
    md, js = out / "reproduce.md", out / "reproduce.json"
    atomic_write_text(md, text)
    atomic_write_json(js, {"table": table.name, "citation": table.citation, "read_from": table.source["read_from"],
                           "backbone": backbone, "model": model, "limit": limit, "overrides": list(overrides),
                           "batch_size": batch_size or 1,
                           "baseline": BASELINE, "seed": seed,
                           "resamples": resamples, "unavailable": table.unavailable,
                           "best": best_per_dataset(table, rows), "rows": rows})
    files = [md, js] + (plot_reproduction(table, rows, out, backbone=backbone, model=model) if plots else [])
    return ReproduceResult(table, backbone, rows, text, files, dict(runs))
