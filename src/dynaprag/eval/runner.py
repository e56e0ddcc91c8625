"""The resumable evaluation runner: one method on one dataset into a run folder.

A run folder holds

* ``config.json``: the fully resolved configuration (dataset, files, the pipeline's every knob);
* ``records.jsonl``: one record per question (prediction, gold, scores, the method's full trace
  with every retrieval's position, trigger scores, query and hit ids, token counts, forward
  passes, wall seconds, peak memory);
* ``summary.json``: averages over the records of the configured questions, rewritten
  atomically after every question.

Each record is appended as one complete line, then flushed and fsynced, so a run killed at any
moment leaves at most a torn last line. On restart the runner drops a torn line, skips the
question ids already recorded and continues: nothing is lost and nothing is duplicated. A
restart with a different configuration is refused (the keys that differ are named) unless only
``limit`` changed, which extends or shortens the run, ``batch_size`` (each record keeps the
size it was decoded at: in bfloat16 a batched answer may differ from batch 1's at a near-tie), or
the Ray workers (``ray``: :mod:`dynaprag.eval.distributed`, which writes through :func:`open_run`).
A shortened run keeps the records beyond its limit on disk (a later, longer run reuses them) but
its summary and report cover exactly the questions of its config; the summary's
``records_beyond_limit`` counts the ones left out.

Every file is written through :mod:`dynaprag.files` (``.NAME.dynaprag-tmp-<pid>`` then a rename),
and a run first removes the temporary files that dead dynaprag processes left in the folder, and
nothing else. A run folder is marked by a ``.dynaprag-run`` file; a non-empty folder without it
(and without an earlier version's run ``config.json``) is refused with a :class:`RunError`
unless the caller claims it on purpose (``claim_run_folder(out, adopt=True)``, the CLI's
``--out-nonempty-ok``): dynaprag then adds its files next to the user's and deletes none of them.

>>> summary = evaluate(examples, pipeline.answer, "runs/hotpot-dragin", config=cfg)  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import resource
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from dynaprag.eval.datasets import Example
from dynaprag.eval.metrics import normalize_answer, recall_at_k, score_answer
from dynaprag.files import atomic_write_json, atomic_write_text, sweep_legacy_of, sweep_stale
from dynaprag.jsonl_log import CorruptLogError, append_jsonl, read_jsonl
from dynaprag.trace import Answer, Trace

__all__ = ["RECORDS", "SUMMARY", "CONFIG", "RUN_MARKER", "InOrder", "OpenRun", "RunError", "claim_run_folder",
           "evaluate", "make_error_record", "make_record", "open_run", "read_records", "records_within_limit",
           "summarize"]

RECORDS, SUMMARY, CONFIG = "records.jsonl", "summary.json", "config.json"
#: the file that marks a folder as a dynaprag run folder (so its leftovers may be swept)
RUN_MARKER = ".dynaprag-run"
#: config keys that may change between a run and its resumption (``ray``: the workers and their
#: resources, :mod:`dynaprag.eval.distributed`; how a run is spread is not what it computes)
RESUMABLE_KEYS = ("limit", "batch_size", "ray")
#: config keys that run folders written before them lack: added when such a run resumes
RECORDED_SINCE = ("resolved_dtype",)


class RunError(RuntimeError):
    """A run folder that cannot be (re)used as asked; the message says why and what to do."""


def _earlier_run(run_dir: Path) -> bool:
    """True for a run folder of an earlier dynaprag (before :data:`RUN_MARKER`): its run ``config.json``."""
    try:
        config = json.loads((run_dir / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("pipeline"), dict) and "dataset" in config


def claim_run_folder(run_dir: str | Path, *, adopt: bool = False) -> Path:
    """Create or reuse ``run_dir`` as a run folder; refuse a non-empty folder that is not one.

    A folder is a run folder when it holds :data:`RUN_MARKER` (or an earlier version's run
    ``config.json``). ``adopt`` claims a non-empty other folder on purpose: the marker is
    added and the user's files stay untouched (a sweep removes only dynaprag's own names).
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir} is a file, not a folder; choose a new folder for the run")
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / RUN_MARKER).is_file():
        return run_dir
    entries = sorted(p.name for p in run_dir.iterdir())
    if entries and not adopt and not _earlier_run(run_dir):
        raise RunError(f"--out {run_dir} is not empty and not a dynaprag run folder ({len(entries)} entries, e.g. "
                       f"{entries[0]!r}); use a new or empty folder, or --out-nonempty-ok to add the run's files "
                       "to it (nothing in it is deleted)")
    atomic_write_text(run_dir / RUN_MARKER, "a dynaprag eval run folder (records.jsonl, summary.json, config.json)\n")
    return run_dir


def sweep_leftovers(run_dir: Path) -> list[Path]:
    """Remove temporary files of dead dynaprag writers from the run folder ``run_dir``; return them.

    Today's names (``.summary.json.dynaprag-tmp-<pid>``) and, for the run's own files only,
    those of earlier versions (``summary.json.tmp-<pid>``, ``.summary.json.tmp<pid>``).
    """
    removed = sweep_stale(run_dir)
    for name in (SUMMARY, CONFIG):
        removed += sweep_legacy_of(run_dir / name)
    return removed


def read_records(path: Path, *, repair: bool = False) -> list[dict]:
    """Records of a ``records.jsonl``: :func:`dynaprag.jsonl_log.read_jsonl` (a torn last line is
    dropped, and with ``repair`` cut off the file), with corruption before the end a :class:`RunError`."""
    try:
        return read_jsonl(path, repair=repair, require=("id",))
    except CorruptLogError as exc:
        raise RunError(f"corrupt record in the middle of the file: {exc}") from None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def retrieved_ids(trace: Mapping) -> list[str]:
    """Hit ids of every retrieval in firing order, first occurrence kept."""
    return list(dict.fromkeys(h for r in trace.get("retrievals", []) for h in r.get("hit_ids", [])))


def gold_recall(example: Example, trace: Mapping) -> float | None:
    """Recall of the example's gold passages among everything the method retrieved.

    Uses passage ids when the dataset gives them, else titles (official files name supporting
    passages by title). ``None`` when the dataset has no gold passages for this question.
    """
    if example.gold_ids:
        return recall_at_k(retrieved_ids(trace), example.gold_ids)
    if example.gold_titles:
        titles = [normalize_answer(t) for r in trace.get("retrievals", []) for t in r.get("hit_titles", [])]
        return recall_at_k(titles, [normalize_answer(t) for t in example.gold_titles])
    return None


def make_record(example: Example, answer: Answer, seconds: float, *, yes_no_task: bool) -> dict:
    """The JSONL record of one answered question."""
    trace = answer.trace.to_dict()
    scores = score_answer(answer.short, example.answers, yes_no_task=yes_no_task)
    recall = gold_recall(example, trace)
    if recall is not None:
        scores["recall"] = recall
    return {
        "id": example.id, "dataset": example.dataset, "type": example.type, "question": example.question,
        "prediction": answer.short, "raw_prediction": trace["extraction"].get("raw_short", answer.short),
        "forced_answer": bool(trace["extraction"].get("forced", False)), "text": answer.text,
        "gold": list(example.answers),
        "gold_ids": list(example.gold_ids), "scores": scores,
        "retrievals": len(trace["retrievals"]), "retrieved_ids": retrieved_ids(trace),
        "generated_tokens": trace["generated_tokens"], "prompt_tokens": trace["prompt_tokens"],
        "forward_passes": trace["forward_passes"], "seconds": round(seconds, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1), "trace": trace,
    }


def make_error_record(example: Example, error: str, *, yes_no_task: bool) -> dict:
    """The record of a question whose answer raised ``error`` (``"TypeName: message"``) on a Ray worker.

    It has every key of :func:`make_record`, so summaries, reports and resumption read it as
    they read any record: the prediction is empty and scored as such (as
    :func:`score_predictions` scores a missing prediction), the costs are zero, and ``error``
    says what happened (``summarize`` counts them as ``errors``).
    """
    trace = Trace(notes=[error]).to_dict()
    return {
        "id": example.id, "dataset": example.dataset, "type": example.type, "question": example.question,
        "prediction": "", "raw_prediction": "", "forced_answer": False, "text": "", "gold": list(example.answers),
        "gold_ids": list(example.gold_ids), "scores": score_answer("", example.answers, yes_no_task=yes_no_task),
        "retrievals": 0, "retrieved_ids": [], "generated_tokens": 0, "prompt_tokens": 0, "forward_passes": 0,
        "seconds": 0.0, "peak_rss_mb": 0.0, "trace": trace, "error": error,
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def records_within_limit(records: Sequence[dict], config: Mapping) -> list[dict]:
    """The records a run folder's summary covers: the first ``config["limit"]`` (all without one).

    Records are appended in question-file order, so these are the records of the configured
    questions; records beyond a shortened limit stay on disk for a later, longer run.
    """
    limit = config.get("limit")
    return list(records if limit is None else records[:limit])


def summarize(records: Sequence[dict], config: Mapping | None = None, *, beyond_limit: int = 0) -> dict:
    """Averages over records: answer metrics, retrieval recall, and per-question costs.

    ``beyond_limit`` is the number of records on disk left out because the config's limit
    excludes them; it is reported as ``records_beyond_limit`` when not zero.
    """
    config = config or {}
    pipeline = config.get("pipeline", {})
    out: dict[str, Any] = {
        "method": pipeline.get("method"), "model": pipeline.get("model"), "dataset": config.get("dataset"),
        "questions": len(records),
    }
    if beyond_limit:
        out["records_beyond_limit"] = beyond_limit
    if errors := sum(1 for r in records if r.get("error")):
        out["errors"] = errors
    for metric in ("em", "f1", "cover_em", "acc", "recall"):
        values = [r["scores"][metric] for r in records if r["scores"].get(metric) is not None]
        if values and (metric != "recall" or any(r["retrievals"] for r in records)):
            out[metric] = _mean(values)
    for key, name in (("retrievals", "retrievals_per_question"), ("generated_tokens", "generated_tokens_per_question"),
                      ("prompt_tokens", "prompt_tokens_per_question"),
                      ("forward_passes", "forward_passes_per_question"), ("seconds", "s_per_question")):
        out[name] = _mean([r[key] for r in records])
    if any("forced_answer" in r for r in records):
        out["forced_answer_share"] = _mean([float(r.get("forced_answer", False)) for r in records])
    out["peak_rss_mb"] = max((r["peak_rss_mb"] for r in records), default=None)
    out["total_seconds"] = sum(r["seconds"] for r in records)
    return out


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Refuse a second runner on the same folder (two writers would interleave records)."""
    with open(run_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{run_dir} is in use by another dynaprag eval") from None
        yield


def _check_config(run_dir: Path, config: Mapping) -> None:
    path = run_dir / CONFIG
    if not path.exists():
        atomic_write_json(path, dict(config))
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: not a run config ({exc}); use a new --out folder") from None
    if not isinstance(old, dict):
        raise RunError(f"{path}: not a run config (not a JSON object); use a new --out folder")
    differing = _diff(old, json.loads(json.dumps(dict(config))))
    blocking = [k for k in differing if k.split(".", 1)[0] not in RESUMABLE_KEYS
                and not (k in RECORDED_SINCE and k not in old)]
    if blocking:
        raise RunError(f"{run_dir} holds a run with a different config ({', '.join(blocking)} differ); "
                       "use a new --out folder to run other settings")
    if differing:
        atomic_write_json(path, dict(config))


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if a != b else []


class OpenRun:
    """A run folder opened by :func:`open_run`: its records so far, the questions still to do, and
    an appender that puts each new record on disk (one fsynced line) before it returns."""

    def __init__(self, run_dir: Path, examples: Sequence[Example], config: Mapping[str, Any], on_disk: list[dict],
                 handle) -> None:
        self.dir, self.config, self._handle = run_dir, config, handle
        wanted = {ex.id for ex in examples}
        self.records = [r for r in on_disk if r["id"] in wanted]
        self.beyond = len(on_disk) - len(self.records)
        done = {r["id"] for r in self.records}
        self.todo = [ex for ex in examples if ex.id not in done]

    def append(self, record: dict) -> None:
        """Append ``record`` (the next question of :attr:`todo` in question order) to ``records.jsonl``."""
        append_jsonl(self._handle, record)
        self.records.append(record)

    def summary(self) -> dict:
        """:func:`summarize` over the records of the opened questions."""
        return summarize(self.records, self.config, beyond_limit=self.beyond)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_json(self.dir / SUMMARY, dict(summary))


@contextlib.contextmanager
def open_run(run_dir: str | Path, examples: Sequence[Example], *, config: Mapping[str, Any],
             adopt: bool = False) -> Iterator[OpenRun]:
    """Open ``run_dir`` for appending the records of ``examples`` still to do; one writer at a time.

    Claims the folder (:func:`claim_run_folder`), takes its lock, sweeps dead writers' temporary
    files, checks ``config`` against the recorded one (refusing a different run), and cuts a torn
    last record off ``records.jsonl``. The single-process runner (:func:`evaluate`) and the Ray
    driver (:mod:`dynaprag.eval.distributed`) both write through it.
    """
    run_dir = claim_run_folder(run_dir, adopt=adopt)
    with _locked(run_dir):
        sweep_leftovers(run_dir)
        _check_config(run_dir, config)
        on_disk = read_records(run_dir / RECORDS, repair=True)
        with open(run_dir / RECORDS, "ab") as handle:
            yield OpenRun(run_dir, examples, config, on_disk, handle)


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


#: ``answer_many(questions)``: ``(index, Answer or exception)`` pairs in finishing order
AnswerMany = Callable[[Sequence[str]], Iterable[tuple[int, "Answer | BaseException"]]]


def evaluate(examples: Sequence[Example], answer_fn: Callable[[str], Answer] | None, run_dir: str | Path, *,
             config: Mapping[str, Any], yes_no_task: bool = False, progress: bool = True,
             answer_many: AnswerMany | None = None, adopt: bool = False, label: str | None = None) -> dict:
    """Answer every example not yet recorded in ``run_dir``; return the summary of the examples' records.

    ``answer_fn`` receives the question text only: no oracle field reaches the method. Records
    of questions not among ``examples`` (beyond a shortened limit) stay on disk, unsummarised.
    A question whose prompt does not fit the model stops the run with a :class:`RunError` naming
    it (the records so far are kept), rather than being scored as a silent empty answer.

    ``answer_many`` (e.g. :meth:`~dynaprag.pipeline.Pipeline.answer_many`) answers the questions
    still to do instead of ``answer_fn``, several at once, in the order they finish. Records are
    still appended strictly in question-file order: an answer that finishes before an earlier
    question's is held in memory until that one is written (a kill loses at most the held
    ones; nothing is duplicated). A question that raised stops the run once every question
    before it is written, as with ``answer_fn``. A record's ``seconds`` is then the answer's
    ``trace.seconds`` (wall time from joining the batch to finishing, other questions' work
    included), and the summary adds ``questions_per_hour`` over this invocation's wall time.

    A non-empty ``run_dir`` that is not a run folder is refused unless ``adopt``
    (:func:`claim_run_folder`).
    """
    from dynaprag.lm.generator import PromptTooLong  # here, so `dynaprag report` does not import torch

    if (answer_fn is None) == (answer_many is None):
        raise ValueError("pass exactly one of answer_fn and answer_many")
    with open_run(run_dir, examples, config=config, adopt=adopt) as folder:
        records, todo = folder.records, folder.todo
        bar = _progress(len(examples), len(examples) - len(todo), enabled=progress, label=label)
        _postfix(bar, records)
        started, written = time.perf_counter(), 0

        def summary_now() -> dict:
            summary = folder.summary()
            if answer_many is not None and written:
                elapsed = time.perf_counter() - started
                summary["questions_per_hour"] = written / elapsed * 3600 if elapsed > 0 else None
                summary["questions_per_hour_over"] = written
            return summary

        results = _one_at_a_time(answer_fn, todo) if answer_many is None else _batched(answer_many, todo)
        try:
            for example, result, seconds in results:
                if isinstance(result, PromptTooLong):
                    raise RunError(f"question {example.id!r}: {result}") from None
                if isinstance(result, BaseException):
                    raise result
                record = make_record(example, result, seconds, yes_no_task=yes_no_task)
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


def _one_at_a_time(answer_fn: Callable[[str], Answer], todo: Sequence[Example]) -> Iterator[tuple]:
    """``(example, Answer or exception, seconds)`` in question order, one question at a time."""
    from dynaprag.lm.generator import PromptTooLong

    for example in todo:
        start = time.perf_counter()
        try:
            answer = answer_fn(example.question)
        except PromptTooLong as exc:
            yield example, exc, 0.0
            return
        yield example, answer, time.perf_counter() - start


def _batched(answer_many: AnswerMany, todo: Sequence[Example]) -> Iterator[tuple]:
    """``(example, Answer or exception, seconds)`` in question order from answers in finishing order.

    Answers that finish early wait in an :class:`InOrder` until every earlier question has been yielded.
    """
    if not todo:
        return
    results = iter(answer_many([ex.question for ex in todo]))
    order = InOrder()
    try:
        for index, result in results:
            for position, due in order.put(index, result):
                yield todo[position], due, 0.0 if isinstance(due, BaseException) else due.trace.seconds
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
        em = _mean([r["scores"]["em"] for r in records])
        f1 = _mean([r["scores"]["f1"] for r in records])
        bar.set_postfix_str(f"EM {em:.3f} F1 {f1:.3f}")


def read_predictions(path: str | Path) -> dict[str, str]:
    """Predictions by question id from JSONL (``{"id", "prediction"}`` per line, e.g. a run's
    ``records.jsonl``), a JSON mapping ``{id: answer}``, or HotpotQA's ``{"answer": {id: answer}}``."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        out = {}
        for line_no, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    record = json.loads(line)
                    out[str(record["id"])] = str(record["prediction"])
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise RunError(f"{path}:{line_no}: expected {{\"id\", \"prediction\"}} ({exc})") from None
        return out
    data = json.loads(text)
    if isinstance(data, dict) and isinstance(data.get("answer"), dict):
        data = data["answer"]
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a mapping of question id to answer")
    return {str(k): str(v) for k, v in data.items()}


def score_predictions(examples: Sequence[Example], predictions: Mapping[str, str], *,
                      yes_no_task: bool = False) -> dict:
    """Average EM, F1, cover EM (and accuracy) of fixed predictions; a missing prediction scores as empty."""
    rows = [score_answer(predictions.get(ex.id, ""), ex.answers, yes_no_task=yes_no_task) for ex in examples]
    out: dict[str, Any] = {"questions": len(rows), "missing": sum(ex.id not in predictions for ex in examples)}
    for metric in ("em", "f1", "cover_em", "acc"):
        if rows and metric in rows[0]:
            out[metric] = _mean([r[metric] for r in rows])
    return out
