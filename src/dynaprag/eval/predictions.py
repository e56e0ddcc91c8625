"""Score fixed predictions against a dataset's gold answers, without running a model.

For predictions made elsewhere (another toolkit's output, an official file) scored the one way
every dynaprag run is scored (:func:`dynaprag.eval.metrics.score_answer`); ``dynaprag eval``
runs write their own records and need none of this.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from dynaprag.eval.datasets import Example
from dynaprag.eval.metrics import score_answer
from dynaprag.eval.records import mean
from dynaprag.eval.run_folder import RunError

__all__ = ["read_predictions", "score_predictions"]


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
            out[metric] = mean([r[metric] for r in rows])
    return out
