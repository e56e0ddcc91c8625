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

>>> sorted(table_names())[:3]
['dragin-table2', 'dynamic-toolkit', 'flashrag-benchmark']
>>> result = reproduce("dragin-table2", model="qwen2.5-coder-0.5b", data_dir="../shared/data",
...                    limit=100, out="runs/dragin")          # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from dynaprag.eval.calibrate import CalibratedThreshold
from dynaprag.eval.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, bootstrap_interval, pair_by_id, paired_comparison
from dynaprag.eval.published import BASELINE, MethodMap, PublishedTable, TableError, load_tables, packaged_tables
from dynaprag.eval.reproduce_report import best_per_dataset, markdown, plot_reproduction
from dynaprag.files import atomic_write_json, atomic_write_text

__all__ = ["BASELINE", "MethodMap", "PublishedTable", "ReproduceError", "ReproduceResult", "TableError",
           "best_per_dataset", "get_table", "load_tables", "missing_data", "reproduce", "table_names", "theta_warnings",
           "write_outputs"]

#: a run's costs copied into each of its rows (``questions_per_hour`` for batched runs)
COST_KEYS = ("retrievals_per_question", "generated_tokens_per_question", "s_per_question", "questions_per_hour")


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
    from dynaprag.eval.download import RELEASES

    questions = questions or {}
    has_corpus_override = any(o.startswith("retrieval.corpus=") for o in overrides)
    lines = []
    for name in datasets:
        spec = DATASETS.get(name)
        qfile = Path(questions[name]) if name in questions else (questions_path(data_dir, name) if data_dir else None)
        if qfile is None or not qfile.is_file():
            get = (f"get {spec.release}" if spec.release and name not in RELEASES else
                   f"download the official release with `dynaprag data download {name}`")
            lines.append(f"{name}: question file {qfile or 'DATA_DIR/questions/' + name + '.jsonl'} not found; "
                         f"{get} and pass it as --questions {name}=FILE (or put it at "
                         f"DATA_DIR/questions/{name}.jsonl)")
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
    warnings: list[str] = field(default_factory=list)


def _is_backbone(model: str, backbones: Sequence[str]) -> bool:
    """Whether ``model`` (an alias, hub id or folder) names one of the paper's backbones."""
    def squash(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    return any(squash(b) in squash(Path(model).name) for b in backbones)


def theta_warnings(table: PublishedTable, cells: Sequence[tuple[str, str]], *, model: str, data_dir, questions,
                   limit: int | None, overrides: Sequence[str] = (),
                   calibrated: Mapping[tuple[str, str], CalibratedThreshold] | None = None) -> list[str]:
    """One line per method whose paper θ runs on a model it was not set for, naming the fix.

    A paper's threshold was chosen for its backbone's score scale; on another model it may fire
    on every draft or never. A cell with a ``--calibrated`` θ, or run on the paper's backbone, is
    fine; so is a θ the user set (``trigger.theta=...``).
    """
    from dynaprag.eval.experiment import resolve
    from dynaprag.pipeline import resolve_method_of

    calibrated = calibrated or {}
    if _is_backbone(model, table.backbones) or any(o.split("=", 1)[0] in ("trigger.theta", "options.theta")
                                                   for o in overrides):
        return []
    found: dict[str, tuple[list[str], bool]] = {}
    for dataset, method in cells:
        if (dataset, method) in calibrated:
            continue
        _, pipe_cfg = resolve(dataset, data_dir=str(data_dir) if data_dir else None, questions=questions.get(dataset),
                              method=method, limit=limit, overrides=[*table.overrides(dataset), f"model={model}", *overrides])
        trigger = resolve_method_of(pipe_cfg).trigger
        theta = getattr(trigger, "theta", None)
        if isinstance(theta, (int, float)):
            where, _ = found.setdefault(method, ([], bool(getattr(type(trigger), "calibratable", False))))
            where.append(f"{dataset} θ={theta:g}")
    lines = []
    for method, (where, calibratable) in found.items():
        fix = (f"fit one for {model} on held-out questions with `dynaprag calibrate --method {method} --dataset D "
               f"--model {model} --start N --n 50 --out FILE` and pass --calibrated FILE" if calibratable else
               f"set trigger.theta for {model} if it fires on every draft or never")
        lines.append(f"{method} uses the paper's θ ({', '.join(where)}), set for {', '.join(table.backbones)}, on "
                     f"{model}: {fix}.")
    return lines


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


def _cell_config(dataset: str, method: str, *, table: PublishedTable, data_dir, questions, limit, model, dtype,
                 overrides: Sequence[str], batch_size: int | None = None) -> tuple[Any, Any]:
    """``(RunConfig, PipelineConfig)`` of one (dataset, method) cell: the table's settings, then the user's."""
    from dynaprag.eval.experiment import resolve

    settings = table.overrides(dataset) + [f"model={model}"] + ([f"dtype={dtype}"] if dtype else [])
    return resolve(dataset, data_dir=str(data_dir) if data_dir else None, questions=questions.get(dataset),
                   method=method, limit=limit, overrides=[*settings, *overrides], batch_size=batch_size)


def _run_cell(dataset: str, method: str, *, out: Path, models: dict, retrievers: dict, progress: bool,
              **settings: Any) -> Path:
    """One (dataset, method) run into ``out``; the model and retriever are loaded once and shared."""
    from dynaprag.config import to_dict
    from dynaprag.eval.experiment import is_complete, library_progress, load_run_examples, run

    run_cfg, pipe_cfg = _cell_config(dataset, method, **settings)
    if is_complete(out, load_run_examples(run_cfg, pipe_cfg.retrieval.corpus)):
        run(run_cfg, pipe_cfg, out, progress=False)  # checks the config still matches, loads and answers nothing
        return out
    key = (pipe_cfg.model, pipe_cfg.dtype)
    rkey = repr(to_dict(pipe_cfg.retrieval))
    with library_progress(progress):
        if key not in models:
            from dynaprag.lm import load_model

            models[key] = load_model(pipe_cfg.model, dtype=pipe_cfg.dtype)
        if rkey not in retrievers:
            from dynaprag.retrieval import build_retriever

            retrievers[rkey] = build_retriever(pipe_cfg.retrieval, progress=progress)
    run(run_cfg, pipe_cfg, out, lm=models[key], retriever=retrievers[rkey], progress=progress,
        label=f"{dataset} {method}")
    return out


def reproduce(table: str | PublishedTable, *, model: str, data_dir: str | Path | None, out: str | Path,
              limit: int | None = None, datasets: Sequence[str] | None = None, backbone: str | None = None,
              questions: Mapping[str, str] | None = None, overrides: Sequence[str] = (), dtype: str | None = None,
              plots: bool = True, progress: bool = True, seed: int = DEFAULT_SEED,
              resamples: int = DEFAULT_RESAMPLES, methods: Sequence[str] | None = None,
              calibrated: Sequence[str | Path] = (), batch_size: int | None = None,
              warn: Callable[[str], None] | None = None, ray: Any = None) -> ReproduceResult:
    """Run ``table``'s methods x ``datasets`` (default: the table's) on ``model`` into ``out``; write the outputs.

    ``warn`` receives, before anything runs, one line per method that uses a paper's θ on a
    model it was not set for (:func:`theta_warnings`); the lines also go into ``reproduce.md``.

    ``overrides`` (``key=value``) apply to every run after the table's reference settings;
    ``calibrated`` are ``dynaprag calibrate`` configs whose θ replaces the preset's for their
    (method, dataset) cell only (:func:`calibrated_thresholds` refuses one fitted for another
    model or on evaluated questions); ``methods`` runs a subset (two processes can split a
    table; a later call without it finds their finished runs); ``batch_size`` is ``eval``'s.
    ``backbone`` picks the published column (default: the paper's first backbone). Every dataset
    is checked before anything loads; a missing one raises :class:`ReproduceError` naming what
    to download. Runs already complete in ``out`` are reused without loading the model.
    ``ray`` (a :class:`~dynaprag.eval.distributed.RayEvalConfig`) answers every cell's questions
    on Ray workers, the cells' shards in one queue (the same run folders).
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
        raise ReproduceError(f"table {spec.name} needs datasets that are not present (one line each):\n  "
                             + "\n  ".join(missing))
    chosen = [m.ours for m in spec.methods]
    if methods:
        if unknown := [m for m in methods if m not in chosen]:
            raise ReproduceError(f"{spec.name}: methods {unknown} are not in this table; choose from "
                                 f"{', '.join(chosen)}")
        chosen = [m for m in chosen if m in methods]
    thetas = calibrated_thresholds(calibrated, table=spec, datasets=datasets, model=model, limit=limit)
    warnings = theta_warnings(spec, [(d, m) for d in datasets for m in chosen], model=model, data_dir=data_dir,
                              questions=questions, limit=limit, overrides=overrides, calibrated=thetas)
    for line in warnings:
        (warn or (lambda _: None))(line)
    out = Path(out)
    cells = {(dataset, method): thetas.get((dataset, method)) for dataset in datasets for method in chosen}
    settings = dict(table=spec, data_dir=data_dir, questions=questions, limit=limit, model=model, dtype=dtype,
                    batch_size=batch_size)

    def cell_overrides(cal) -> list[str]:
        return [*overrides, *([f"trigger.theta={cal.theta!r}"] if cal else [])]

    runs: dict[tuple[str, str], Path] = {key: out / key[0] / key[1] for key in cells}
    if ray is not None:
        from dynaprag.eval.distributed import cell, evaluate_on_ray

        evaluate_on_ray([cell(*_cell_config(d, m, overrides=cell_overrides(cal), **settings), runs[(d, m)],
                              f"{d} {m}") for (d, m), cal in cells.items()], ray, progress=progress)
    else:
        models: dict = {}
        retrievers: dict = {}
        for (dataset, method), cal in cells.items():
            _run_cell(dataset, method, out=runs[(dataset, method)], models=models, retrievers=retrievers,
                      progress=progress, overrides=cell_overrides(cal), **settings)
    return write_outputs(spec, runs, out, backbone=backbone, model=model, plots=plots, seed=seed,
                         resamples=resamples, overrides=overrides, limit=limit, calibrated=thetas,
                         batch_size=batch_size, warnings=warnings)


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
                                   else None, "backbone": backbone, "cost": run.cost(), "batch_size": run.batch_size,
                                   **{k: run.summary.get(k) for k in COST_KEYS if run.summary.get(k) is not None}}
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


def write_outputs(table: PublishedTable, runs: Mapping[tuple[str, str], Path], out: str | Path, *, backbone: str,
                  model: str, plots: bool = True, seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES,
                  overrides: Sequence[str] = (), limit: int | None = None,
                  calibrated: Mapping[tuple[str, str], CalibratedThreshold] | None = None,
                  batch_size: int | None = None, warnings: Sequence[str] = ()) -> ReproduceResult:
    """``reproduce.md``, ``reproduce.json`` and the plot from finished run folders."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    calibrated = calibrated or {}
    rows = build_rows(table, runs, backbone=backbone, seed=seed, resamples=resamples)
    for row in rows:
        if cal := calibrated.get((row["dataset"], row["method"])):
            row.update(theta=cal.theta, theta_from=cal.path)
    text = markdown(table, rows, backbone=backbone, model=model, overrides=overrides, limit=limit,
                    calibrated=calibrated, batch_size=batch_size, warnings=warnings)
    md, js = out / "reproduce.md", out / "reproduce.json"
    atomic_write_text(md, text)
    atomic_write_json(js, {"table": table.name, "citation": table.citation, "read_from": table.source["read_from"],
                           "backbone": backbone, "model": model, "limit": limit, "overrides": list(overrides),
                           "batch_size": batch_size or 1,
                           "baseline": BASELINE, "seed": seed,
                           "resamples": resamples, "unavailable": table.unavailable,
                           "best": best_per_dataset(table, rows), "warnings": list(warnings), "rows": rows})
    files = [md, js] + (plot_reproduction(table, rows, out, backbone=backbone, model=model) if plots else [])
    return ReproduceResult(table, backbone, rows, text, files, dict(runs), list(warnings))
