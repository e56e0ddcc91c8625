"""Adaptive-RAG's silver labels for one model: run the three strategies on a training split, label, train.

The paper's procedure (starsuzi/Adaptive-RAG @ ``0c88670``, README "Run Classifier", and
:mod:`dynaprag.dynamic.methods.adaptive_rag.labels`): answer the training questions with no
retrieval (A), single-step (B) and multi-step retrieval (C); a question's label is the simplest
strategy whose answer matched a gold answer exactly after normalisation (``evaluate.py:653-659``);
questions no strategy answered take their dataset's inductive-bias label (multi-hop: C,
single-hop: B); then the classifier is trained on them.

**The split.** As ``dynaprag calibrate`` (:mod:`dynaprag.eval.calibrate`): questions ``start ..
start+n-1`` (0-based) of each dataset's question file are the training split and questions
``0 .. start-1`` stay for evaluation (``held_out_from`` = ``start``, 100 by default since the
default evaluation slice is the first 100). The evaluated questions are never answered here. The
split is written to ``labels.json`` and to the classifier's ``classifier.json``.

**Resumable.** Every answer is appended to ``<work>/<dataset>/answers.jsonl`` (one line per
question and route, fsync'd) before the next one starts; a killed run re-reads the log (a torn
last line dropped) and answers only what is missing. The routes run as the ``adaptive-rag``
preset with ``trigger.route`` forced to A, B or C, so the labels come from exactly the
strategies the router runs, batched (``batch_size`` questions decode together).

>>> build("hotpotqa", data_dir="../shared/data", start=100, n=200, name="minilm")   # doctest: +SKIP
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from dynaprag.config import ConfigError
from dynaprag.dynamic.methods.adaptive_rag.classifier import classifier_root
from dynaprag.dynamic.methods.adaptive_rag.labels import LABELS, inductive_label, label_counts, silver_label
from dynaprag.dynamic.methods.adaptive_rag.train import HeadSettings, train_classifier
from dynaprag.eval.calibrate import DEFAULT_START
from dynaprag.eval.metrics import exact_match
from dynaprag.files import atomic_write_json
from dynaprag.jsonl_log import append_jsonl, read_jsonl

__all__ = ["DEFAULT_N", "DEFAULT_START", "SilverRun", "build", "label_records", "retrain", "split_words"]

DEFAULT_N = 200
METHOD = "adaptive-rag"


@dataclass
class SilverRun:
    """What a silver-label run produced: the labelled records, where they are, and the classifier."""

    records: list[dict]
    split: str
    labels_file: Path
    classifier: Path | None
    counts: dict[str, int] = field(default_factory=dict)


def split_words(datasets: Sequence[str], start: int, n: int) -> str:
    """The training split in words, e.g. ``questions 100..299 (0-based) of hotpotqa; evaluate on 0..99``."""
    return (f"questions {start}..{start + n - 1} (0-based) of {', '.join(datasets)}; held_out_from {start}: "
            f"evaluate only on questions 0..{start - 1}")


def label_records(examples: Sequence[Any], answers: dict[tuple[str, str], dict], dataset: str) -> list[dict]:
    """One record per example: the silver label from the three routes' answers, else the dataset's."""
    records = []
    for ex in examples:
        correct = {route: bool(answers[(ex.id, route)]["correct"]) for route in LABELS}
        label = silver_label(correct)
        source = "silver" if label else "inductive"
        records.append({"id": ex.id, "question": ex.question, "dataset": dataset, "label": label or
                        inductive_label(dataset), "source": source, "correct": correct})
    return records


def _answer_routes(pipeline, examples: Sequence[Any], log: Path, *, batch_size: int, bar) -> dict:
    """Answer every (example, route) not in ``log`` yet, appending each answer; all answers by key."""
    done = {(r["id"], r["route"]): r for r in read_jsonl(log, repair=True, require=("id", "route", "correct"))}
    bar.update(sum((ex.id, route) in done for ex in examples for route in LABELS))
    with open(log, "ab") as handle:
        for route in LABELS:
            todo = [ex for ex in examples if (ex.id, route) not in done]
            if not todo:
                continue
            results = pipeline.answer_many([ex.question for ex in todo], batch_size=batch_size, method=METHOD,
                                           options={"trigger.route": route})
            for index, answer in results:
                if isinstance(answer, BaseException):
                    raise answer
                ex = todo[index]
                record = {"id": ex.id, "route": route, "short": answer.short, "answers": list(ex.answers),
                          "correct": exact_match(answer.short, ex.answers) > 0,
                          "retrievals": len(answer.trace.retrievals)}
                append_jsonl(handle, record)
                done[(ex.id, route)] = record
                bar.update(1)
    return done


def build(datasets: str | Sequence[str], model: str | None = None, *, data_dir: str | None = None,
          questions: str | None = None, start: int = DEFAULT_START, n: int = DEFAULT_N, name: str = "minilm",
          work: str | Path | None = None, batch_size: int = 8, overrides: Sequence[str] = (),
          settings: HeadSettings | None = None, train: bool = True, out: str | Path | None = None,
          progress: bool = True, lm: Any = None, retriever: Any = None) -> SilverRun:
    """Silver-label questions ``start .. start+n-1`` of each dataset and train the classifier ``name``.

    Writes ``<work>/<dataset>/answers.jsonl`` (the checkpoint), ``<work>/labels.json`` and, with
    ``train``, the classifier to ``out`` (default ``$DYNAPRAG_CACHE/adaptive-rag/<name>/``, where
    ``trigger.classifier=<name>`` finds it); ``work`` defaults to ``$DYNAPRAG_CACHE/adaptive-rag/<name>.silver``.
    ``lm``/``retriever`` reuse loaded ones.
    """
    from tqdm.auto import tqdm

    from dynaprag.eval.experiment import library_progress, load_run_examples, question_file, resolve
    from dynaprag.pipeline import Pipeline

    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    if start < 0 or n < 1:
        raise ConfigError(f"the split needs start >= 0 and n >= 1, got start {start}, n {n}")
    if start == 0:
        raise ConfigError("start 0 leaves no question to evaluate on: the training split must start after the "
                          "evaluated questions (held_out_from; default 100)")
    if questions and len(datasets) > 1:
        raise ConfigError("--questions names one file: give one dataset with it")
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"name: a plain folder name under {classifier_root()}, got {name!r}")
    for dataset in datasets:
        inductive_label(dataset)  # every dataset needs an inductive-bias label: fail before any model loads
    work = Path(work) if work else classifier_root() / f"{name}.silver"
    split = split_words(datasets, start, n)
    explicit = [f"model={model}"] if model else []
    plans = []
    for dataset in datasets:
        run_cfg, pipe_cfg = resolve(dataset, data_dir=data_dir, questions=questions, method=METHOD,
                                    limit=start + n, overrides=[*explicit, *overrides])
        examples = load_run_examples(run_cfg)[start:]
        if len(examples) < n:
            raise ConfigError(f"{question_file(run_cfg)} holds {start + len(examples)} questions, the split "
                              f"{start}..{start + n - 1} needs {start + n}: lower --start or --n")
        plans.append((dataset, pipe_cfg, examples, str(question_file(run_cfg))))
    records: list[dict] = []
    bar = tqdm(total=3 * n * len(datasets), disable=not progress, unit="answer", dynamic_ncols=True,
               desc="adaptive-rag silver labels")
    try:
        for dataset, pipe_cfg, examples, _ in plans:
            with library_progress(progress):  # --no-progress: no library bars either (weights, BM25)
                index = retriever
                if index is None:  # each dataset its own corpus's index, built here so its bar obeys progress
                    from dynaprag.retrieval import build_retriever

                    index = build_retriever(pipe_cfg.retrieval, progress=progress)
                pipeline = Pipeline.from_config(pipe_cfg, lm=lm, retriever=index)
            lm = pipeline.lm
            (work / dataset).mkdir(parents=True, exist_ok=True)
            answers = _answer_routes(pipeline, examples, work / dataset / "answers.jsonl", batch_size=batch_size,
                                     bar=bar)
            records += label_records(examples, answers, dataset)
    finally:
        bar.close()
    meta = {"model": plans[0][1].model, "datasets": datasets, "question_files": [p[3] for p in plans],
            "held_out_from": start, "n_per_dataset": n, "split": split, "correct_rule": "exact match after "
            "SQuAD normalisation (Adaptive-RAG evaluate.py:653-659)"}
    labels_file = work / "labels.json"
    atomic_write_json(labels_file, {**meta, "label_counts": label_counts(records), "records": records})
    folder = None
    if train:
        with library_progress(progress):  # the encoder's weight-loading bar too
            folder = train_classifier(records, Path(out) if out else classifier_root() / name, split=split,
                                      settings=settings,
                                      meta={"model": meta["model"], "held_out_from": start,
                                            "question_files": meta["question_files"],
                                            "labels_file": str(labels_file)})
    return SilverRun(records=records, split=split, labels_file=labels_file, classifier=folder,
                     counts=label_counts(records))


def retrain(labels_file: str | Path, name: str = "minilm", *, out: str | Path | None = None,
            settings: HeadSettings | None = None) -> SilverRun:
    """Train the head again from a ``labels.json`` a run wrote (other settings; nothing is answered)."""
    path = Path(labels_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        records, split = list(data["records"]), str(data["split"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a labels file written by `dynaprag adaptive-rag train` ({exc})") from None
    folder = train_classifier(records, Path(out) if out else classifier_root() / name, split=split, settings=settings,
                              meta={"model": data.get("model"), "held_out_from": data.get("held_out_from"),
                                    "question_files": data.get("question_files"), "labels_file": str(path)})
    return SilverRun(records=records, split=split, labels_file=path, classifier=folder, counts=label_counts(records))
