"""What a run folder's ``records.jsonl`` holds per question, and the summary over them.

A record is everything needed to score, compare and audit one answer without rerunning it:
the prediction as scored and as generated, the gold answers, the scores (with the recall of
the gold passages among everything retrieved), the costs (retrievals, tokens, forward passes,
seconds, peak memory) and the full trace. The summary averages the records of the questions a
run's config covers; :mod:`dynaprag.eval.report` compares runs from the same records.
"""
from __future__ import annotations

import resource
from typing import Any, Mapping, Sequence

from dynaprag.eval.datasets import Example
from dynaprag.eval.metrics import normalize_answer, recall_at_k, score_answer
from dynaprag.trace import Answer, Trace

__all__ = ["gold_recall", "make_error_record", "make_record", "mean", "peak_rss_mb", "records_within_limit",
           "retrieved_ids", "summarize"]


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


def mean(values: Sequence[float]) -> float | None:
    """The arithmetic mean, or None for no values (a metric no record has)."""
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
    quantize = pipeline.get("quantize", "none")
    knobs = (["compile"] if pipeline.get("compile") else []) + ([quantize] if quantize != "none" else [])
    out: dict[str, Any] = {
        "method": pipeline.get("method"), "model": pipeline.get("model"), "dataset": config.get("dataset"),
        "decoder": "+".join([pipeline.get("decoder", "eager")] + knobs),  # e.g. eager, fast, fast+compile+int8
        "questions": len(records),
    }
    if beyond_limit:
        out["records_beyond_limit"] = beyond_limit
    if errors := sum(1 for r in records if r.get("error")):
        out["errors"] = errors
    for metric in ("em", "f1", "cover_em", "acc", "recall"):
        values = [r["scores"][metric] for r in records if r["scores"].get(metric) is not None]
        if values and (metric != "recall" or any(r["retrievals"] for r in records)):
            out[metric] = mean(values)
    for key, name in (("retrievals", "retrievals_per_question"), ("generated_tokens", "generated_tokens_per_question"),
                      ("prompt_tokens", "prompt_tokens_per_question"),
                      ("forward_passes", "forward_passes_per_question"), ("seconds", "s_per_question")):
        out[name] = mean([r[key] for r in records])
    if any("forced_answer" in r for r in records):
        out["forced_answer_share"] = mean([float(r.get("forced_answer", False)) for r in records])
    out["peak_rss_mb"] = max((r["peak_rss_mb"] for r in records), default=None)
    out["total_seconds"] = sum(r["seconds"] for r in records)
    return out
