"""The evaluation runner: answer a run's questions into its run folder, in question order.

:func:`evaluate` is the one route from questions to records, whatever the batch size: an
``answer_many`` callable answers the questions still to do (several at once, or one slot at a
time) and yields ``(index, Answer or exception)`` in the order they finish; the runner appends
each record strictly in question-file order (:class:`InOrder` holds answers that finish early),
one fsynced line each, so a kill loses at most the held answers and duplicates nothing. The run
folder itself (resume, config check, lock) is :mod:`dynaprag.eval.run_folder`, a record and the
summary :mod:`dynaprag.eval.records`.

>>> summary = evaluate(examples, pipeline.answer_many, "runs/hotpot-dragin", config=cfg)  # doctest: +SKIP
>>> summary = evaluate(examples, one_by_one(my_answer_fn), "runs/mine", config=cfg)        # doctest: +SKIP
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from dynaprag.eval.datasets import Example
from dynaprag.eval.predictions import read_predictions, score_predictions
from dynaprag.eval.records import (gold_recall, make_error_record, make_record, mean, peak_rss_mb,
                                   records_within_limit, retrieved_ids, summarize)
from dynaprag.eval.run_folder import (CONFIG, RECORDS, RUN_MARKER, SUMMARY, OpenRun, RunError, claim_run_folder,
                                      open_run, read_records)
from dynaprag.trace import Answer

# The names this module held before the run folder, records and predictions had their own
# modules stay importable from here (scripts and tests written against them).
__all__ = ["RECORDS", "SUMMARY", "CONFIG", "RUN_MARKER", "AnswerMany", "InOrder", "OpenRun", "RunError",
           "claim_run_folder", "evaluate", "gold_recall", "make_error_record", "make_record", "one_by_one",
           "open_run", "peak_rss_mb", "read_predictions", "read_records", "records_within_limit", "retrieved_ids",
           "score_predictions", "summarize"]

#: ``answer_many(questions)``: ``(index, Answer or exception)`` pairs in finishing order
AnswerMany = Callable[[Sequence[str]], Iterable[tuple[int, "Answer | BaseException"]]]


class InOrder:
    """Results that finish in any order, released in question order.

    ``put(position, result)`` holds the result and returns every ``(position, result)`` now due:
    the held run of consecutive positions from the first one not yet released.

    >>> order = InOrder()
    >>> order.put(1, "b"), order.put(0, "a"), order.put(2, "c")
    ([], [(0, 'a'), (1, 'b')], [(2, 'c')])
    """

    def __init__(self) -> None:
        self.next = 0
        self.held: dict[int, Any] = {}

    def put(self, position: int, result: Any) -> list[tuple[int, Any]]:
        self.held[position] = result
        due = []
        while self.next in self.held:
            due.append((self.next, self.held.pop(self.next)))
            self.next += 1
        return due


def one_by_one(answer_fn: Callable[[str], Answer]) -> AnswerMany:
    """An ``answer_many`` over a plain ``answer(question)`` function, one question after another.

    For callers with a function of their own (a baseline, a test); a :class:`~dynaprag.pipeline.Pipeline`
    passes its :meth:`~dynaprag.pipeline.Pipeline.answer_many`. A question that raises yields its
    exception (the runner stops there, once every earlier record is written) and nothing after it
    is answered. The answer's ``trace.seconds`` is set to the call's wall time when it has none.
    """
    def answers(questions: Sequence[str]) -> Iterator[tuple[int, Answer | BaseException]]:
        for index, question in enumerate(questions):
            start = time.perf_counter()
            try:
                answer = answer_fn(question)
            except Exception as exc:  # noqa: BLE001 - reported in question order by the runner
                yield index, exc
                return
            if not answer.trace.seconds:
                answer.trace.seconds = time.perf_counter() - start
            yield index, answer

    return answers


def evaluate(examples: Sequence[Example], answer_many: AnswerMany, run_dir: str | Path, *,
             config: dict[str, Any], yes_no_task: bool = False, progress: bool = True, adopt: bool = False,
             label: str | None = None) -> dict:
    """Answer every example not yet recorded in ``run_dir``; return the summary of the examples' records.

    ``answer_many`` receives the question texts only: no oracle field reaches the method. It
    answers the questions still to do in any order (e.g. :meth:`~dynaprag.pipeline.Pipeline.answer_many`
    with the run's batch size; :func:`one_by_one` wraps a plain function); records are appended in
    question-file order. A record's ``seconds`` is the answer's ``trace.seconds`` (at a batch size
    above 1, wall time from joining the batch to finishing, other questions' work included), and a
    batched run's summary adds ``questions_per_hour`` over this invocation's wall time.

    A question whose prompt does not fit the model stops the run with a :class:`RunError` naming
    it, and any other question that raised stops it with that error, once every question before
    it is written (the records so far are kept). Records of questions not among ``examples``
    (beyond a shortened limit) stay on disk, unsummarised. A non-empty ``run_dir`` that is not a
    run folder is refused unless ``adopt`` (:func:`~dynaprag.eval.run_folder.claim_run_folder`).
    """
    from dynaprag.lm.generator import PromptTooLong  # here, so `dynaprag report` does not import torch

    with open_run(run_dir, examples, config=config, adopt=adopt) as folder:
        records, todo = folder.records, folder.todo
        bar = _progress(len(examples), len(examples) - len(todo), enabled=progress, label=label)
        _postfix(bar, records)
        started, written = time.perf_counter(), 0

        def summary_now() -> dict:
            summary = folder.summary()
            if written and config.get("batch_size", 1) > 1:  # at batch 1, seconds per question says it
                elapsed = time.perf_counter() - started
                summary["questions_per_hour"] = written / elapsed * 3600 if elapsed > 0 else None
                summary["questions_per_hour_over"] = written
            return summary

        results = _in_question_order(answer_many, todo)
        try:
            for example, result in results:
                if isinstance(result, PromptTooLong):
                    raise RunError(f"question {example.id!r}: {result}") from None
                if isinstance(result, BaseException):
                    raise result
                record = make_record(example, result, result.trace.seconds, yes_no_task=yes_no_task)
                record["batch_size"] = config.get("batch_size", 1)
                folder.append(record)
                written += 1
                folder.write_summary(summary_now())
                _postfix(bar, records)
                bar.update(1)
        finally:
            results.close()  # stops the questions still decoding (a batch leaves no weights applied)
            bar.close()
        summary = summary_now()
        folder.write_summary(summary)
        return summary


def _in_question_order(answer_many: AnswerMany, todo: Sequence[Example]) -> Iterator[tuple]:
    """``(example, Answer or exception)`` in question order from answers in finishing order.

    Answers that finish early wait in an :class:`InOrder` until every earlier question has been yielded.
    """
    if not todo:
        return
    results = iter(answer_many([ex.question for ex in todo]))
    order = InOrder()
    try:
        for index, result in results:
            for position, due in order.put(index, result):
                yield todo[position], due
            if order.next == len(todo):
                break
        if order.next < len(todo):
            raise RuntimeError(f"answer_many gave no answer for question {todo[order.next].id!r}")
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


def _progress(total: int, initial: int, *, enabled: bool, label: str | None = None):
    """The run's bar, labelled (``label``: which run, e.g. ``"hotpotqa dragin"``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="q", dynamic_ncols=True, desc=label)


def _postfix(bar, records: Sequence[dict]) -> None:
    if records:
        bar.set_postfix_str(f"EM {mean([r['scores']['em'] for r in records]):.3f} "
                            f"F1 {mean([r['scores']['f1'] for r in records]):.3f}")
