"""Resolve what a ``dynaprag eval`` run means, then run it through the real :class:`Pipeline`.

Settings resolve in one fixed order, each step overriding the previous one:

1. the pipeline's defaults (:class:`dynaprag.pipeline.PipelineConfig`);
2. the dataset's defaults: its exemplar set (``prompt.exemplars``) and, with a data dir, its
   corpus (``retrieval.corpus = DATA_DIR/corpus/...``);
3. the ``--config`` file (YAML/JSON; run keys such as ``limit`` at the top level, pipeline keys
   at the top level or nested, e.g. ``retrieval: {backend: dense}``);
4. command-line flags (``--method``, ``--limit``);
5. ``key=value`` overrides (``k=5``, ``prompt.shots=4``, ``limit=20``).

Every key is type-checked by :mod:`dynaprag.config`; an unknown key or a wrong type is an error
naming the key. The resolved result is what ``config.json`` of the run folder records.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from dynaprag.config import ConfigError, apply_overrides, load_file, parse_overrides, to_dict
from dynaprag.eval.datasets import DATASETS, Example, corpus_path, link_gold_facts, load_examples, questions_path

__all__ = ["RunConfig", "is_complete", "library_progress", "load_run_examples", "resolve", "run"]


@dataclass
class RunConfig:
    """What to evaluate on; everything about *how* to answer lives in ``PipelineConfig``."""

    dataset: str = field(default="demo", metadata={"help": "dataset name (hotpotqa, 2wikimultihopqa, strategyqa, "
                                                           "iirc, popqa, cwq, demo)"})
    data_dir: str | None = field(default=None, metadata={
        "help": "folder with questions/NAME.jsonl and corpus/*.jsonl (e.g. ../shared/data)"})
    questions: str | None = field(default=None, metadata={
        "help": "question file (JSONL or an official release file); overrides data_dir's"})
    format: str = field(default="auto", metadata={"help": "question file format: auto, jsonl, or a dataset name"})
    limit: int | None = field(default=None, metadata={"help": "evaluate the first N questions only (N >= 1)",
                                                      "min": 1})
    extraction: str = field(default="forced", metadata={
        "help": "how the scored short answer is read: forced (an answer without 'So the answer is' gets a "
                "20-token forced continuation, as DRAGIN's scoring; see dynaprag.lm.extraction) or marker "
                "(the text after the marker, else the first line)", "choices": ("forced", "marker")})
    batch_size: int = field(default=1, metadata={
        "help": "questions decoded together (Pipeline.answer_many; 1 = one at a time). Float32 answers equal "
                "batch 1's; bfloat16 ones may differ at near-ties. May change when a run resumes. At > 1 a "
                "record's seconds include other questions' work: compare questions_per_hour instead",
        "min": 1, "max": 256})


def check_run_config(run_cfg: RunConfig) -> RunConfig:
    """Refuse values the types allow but a run cannot mean (``limit`` or ``batch_size`` below 1)."""
    if run_cfg.limit is not None and run_cfg.limit < 1:
        raise ConfigError(f"limit: must be at least 1, got {run_cfg.limit}; "
                          "omit it (or limit=null) to evaluate every question")
    if run_cfg.batch_size < 1:
        raise ConfigError(f"batch_size: must be at least 1, got {run_cfg.batch_size}")
    return run_cfg


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and key != "options":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _split(items: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route keys to the run config (its field names) or to the pipeline config (the rest)."""
    run_keys = {f.name for f in dataclasses.fields(RunConfig)}
    run, pipe = {}, {}
    for key, value in items.items():
        head = key.split(".", 1)[0]
        if head == "pipeline":
            pipe[key.split(".", 1)[1]] = value
        elif head in run_keys:
            run[key] = value
        else:
            pipe[key] = value
    return run, pipe


def resolve(dataset: str | None = None, *, data_dir: str | None = None, questions: str | None = None,
            method: str | None = None, limit: int | None = None, config_file: str | None = None,
            overrides: Sequence[str] = (), batch_size: int | None = None) -> tuple[RunConfig, Any]:
    """(RunConfig, PipelineConfig) after applying every layer; see the module docstring."""
    from dynaprag.pipeline import PipelineConfig

    file_items = _flatten(load_file(config_file)) if config_file else {}
    flag_items = {k: v for k, v in (("dataset", dataset), ("data_dir", data_dir), ("questions", questions),
                                    ("limit", limit), ("batch_size", batch_size)) if v is not None}
    cli_items = parse_overrides(list(overrides))
    file_run, file_pipe = _split(file_items)
    cli_run, cli_pipe = _split(cli_items)
    run_cfg = check_run_config(apply_overrides(RunConfig(), {**file_run, **flag_items, **cli_run}))
    spec = DATASETS.get(run_cfg.dataset)
    if run_cfg.data_dir:
        run_cfg.data_dir = str(Path(run_cfg.data_dir).resolve())
    if run_cfg.questions:
        run_cfg.questions = str(Path(run_cfg.questions).resolve())

    pipe_cfg = PipelineConfig()
    defaults: dict[str, Any] = {"prompt.exemplars": spec.exemplars, "dataset": spec.name}
    corpus = corpus_path(run_cfg.data_dir, spec.name) if run_cfg.data_dir else None
    if corpus is not None:
        defaults["retrieval.corpus"] = str(corpus)
    pipe_cfg = apply_overrides(pipe_cfg, defaults)
    pipe_cfg = apply_overrides(pipe_cfg, file_pipe)
    if method is not None:
        pipe_cfg = apply_overrides(pipe_cfg, {"method": method})
    pipe_cfg = apply_overrides(pipe_cfg, cli_pipe)
    if pipe_cfg.retrieval.corpus:
        pipe_cfg = apply_overrides(pipe_cfg, {"retrieval.corpus": str(Path(pipe_cfg.retrieval.corpus).resolve())})
    if run_cfg.dataset != "demo" and not pipe_cfg.retrieval.corpus and pipe_cfg.method != "wo-rag":
        raise ConfigError(f"dataset {run_cfg.dataset!r} needs a retrieval corpus: pass --data-dir DIR "
                          f"(with DIR/corpus/) or retrieval.corpus=FILE")
    from dynaprag.pipeline import resolve_config  # the method's knobs, checked before anything loads or is written

    return run_cfg, resolve_config(pipe_cfg)


def question_file(run_cfg: RunConfig) -> Path:
    """The question file a run reads: explicit, from the data dir, or the packaged demo."""
    if run_cfg.questions:
        return Path(run_cfg.questions)
    if run_cfg.data_dir:
        return questions_path(run_cfg.data_dir, run_cfg.dataset)
    if run_cfg.dataset == "demo":
        from dynaprag.retrieval import demo_questions_path

        return demo_questions_path()
    raise ConfigError(f"dataset {run_cfg.dataset!r}: pass --data-dir DIR or questions=FILE")


def load_run_examples(run_cfg: RunConfig, corpus: str | None = None) -> list[Example]:
    """The run's questions (first ``limit``), with StrategyQA-style gold facts linked to corpus ids."""
    examples = load_examples(question_file(run_cfg), format=run_cfg.format, dataset=run_cfg.dataset,
                             limit=run_cfg.limit)
    if corpus and Path(corpus).is_file() and any(ex.oracle.get("gold_facts") for ex in examples):
        from dynaprag.corpora import read_passages

        texts = {p.text.strip(): p.id for p in read_passages(corpus)}
        examples = link_gold_facts(examples, texts)
    return examples


def resolved_dict(run_cfg: RunConfig, pipe_cfg: Any) -> dict[str, Any]:
    """The JSON written to ``config.json``: every run and pipeline knob, resolved.

    ``resolved_dtype`` is the dtype the model runs in on this machine (``dtype: auto`` resolved):
    a run resumed where ``auto`` means another dtype is refused rather than mixed.
    """
    from dynaprag.lm.models import resolve_dtype

    spec = DATASETS.get(run_cfg.dataset)
    return {**to_dict(run_cfg), "question_file": str(question_file(run_cfg)), "yes_no_task": spec.yes_no,
            "resolved_dtype": str(resolve_dtype(pipe_cfg.dtype)).removeprefix("torch."), "pipeline": to_dict(pipe_cfg)}


def run(run_cfg: RunConfig, pipe_cfg: Any, out: str | Path, *, lm: Any = None, retriever: Any = None,
        progress: bool = True, label: str | None = None) -> dict:
    """Evaluate ``pipe_cfg`` on ``run_cfg``'s questions into run folder ``out``; return the summary.

    A run whose folder already holds every question's record is checked against its config and
    summarised without loading the model or the retriever (a rerun of a finished ``dynaprag
    eval`` returns at once). ``progress`` shows one bar labelled ``label`` (default: dataset and
    method); without it no bar is shown at all, the libraries' weight-loading and index-building
    bars included.
    """
    from dynaprag.eval.runner import evaluate
    from dynaprag.pipeline import Pipeline

    config = resolved_dict(run_cfg, pipe_cfg)
    examples = load_run_examples(run_cfg, pipe_cfg.retrieval.corpus)
    if is_complete(out, examples):
        return evaluate(examples, never_called, out, config=config, yes_no_task=config["yes_no_task"],
                        progress=False)
    with library_progress(progress):
        if retriever is None:
            from dynaprag.retrieval import build_retriever

            retriever = build_retriever(pipe_cfg.retrieval, progress=progress)
        pipeline = Pipeline.from_config(pipe_cfg, lm=lm, retriever=retriever)
    forced = run_cfg.extraction == "forced"
    return evaluate(examples, lambda qs: extracted_answers(pipeline, qs, run_cfg.batch_size, forced), out,
                    config=config, yes_no_task=config["yes_no_task"], progress=progress,
                    label=label or f"{run_cfg.dataset} {pipe_cfg.method}")


def is_complete(out: str | Path, examples: Sequence[Example]) -> bool:
    """Whether run folder ``out`` already records every one of ``examples`` (read only, nothing loads)."""
    from dynaprag.eval.run_folder import RECORDS, read_records

    path = Path(out) / RECORDS
    if not path.is_file():
        return False
    done = {r["id"] for r in read_records(path)}
    return all(ex.id in done for ex in examples)


def never_called(questions: Sequence[str]):
    """The ``answer_many`` of a run that is complete: :func:`~dynaprag.eval.runner.evaluate` never calls it."""
    raise AssertionError("a complete run was asked for an answer")


@contextlib.contextmanager
def library_progress(enabled: bool) -> Iterator[None]:
    """Inside, transformers shows its progress bars (weight loading) only if ``enabled``.

    Our own bars take a ``progress`` flag; transformers' are a process-wide switch, restored after.
    """
    if enabled:
        yield
        return
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def extracted_answers(pipeline: Any, questions: Sequence[str], batch_size: int, forced: bool):
    """``pipeline.answer_many`` with the one answer extraction applied to each answer as it finishes.

    The one route of every run, batch 1 included (one slot). The extraction runs between two
    batched rounds (the other questions wait), on the same model, exactly as after a lone
    answer; a failure there is that question's error.
    """
    with contextlib.closing(pipeline.answer_many(questions, batch_size=batch_size)) as results:
        for index, result in results:
            if forced and not isinstance(result, BaseException):
                try:
                    result = pipeline.extract(questions[index], result)
                except Exception as exc:  # noqa: BLE001 - reported in question order by the runner
                    result = exc
            yield index, result
