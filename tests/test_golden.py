"""Golden numbers on ../shared/data: the metrics of a fixed prediction file are pinned.

The test writes a prediction file from the gold answers with five known perturbations, cycling
by question position: (0) the gold answer, (1) "The " + upper-cased gold + "." (normalisation
must forgive it), (2) gold + " and more words", (3) "unknown", (4) the gold's first word only.
EM is then countable by hand: kinds 0 and 1 always match, kind 4 matches when the gold is one
word. StrategyQA (yes/no) is fully hand-computable: EM = F1 = 3/5 (kind 2 scores F1 0 under
HotpotQA's yes/no rule), accuracy = 4/5 (kind 2 still starts with the right verdict).
Skipped with a message when ../shared/data is absent.
"""
from __future__ import annotations

import json

import pytest

from dynaprag.eval.datasets import DATASETS, load_examples, questions_path
from dynaprag.eval.runner import read_predictions, score_predictions

pytestmark = pytest.mark.golden

#: dataset -> (questions, EM numerator, EM, F1, accuracy)
PINNED = {
    "hotpotqa": (302, 153, 0.5066225165562914, 0.6558508917390884, None),
    "2wikimultihopqa": (588, 278, 0.47278911564625853, 0.6396995834824006, None),
    "strategyqa": (800, 480, 0.6, 0.6, 0.8),
}


def perturb(i: int, gold: str) -> str:
    kind = i % 5
    if kind == 0:
        return gold
    if kind == 1:
        return "The " + gold.upper() + "."
    if kind == 2:
        return gold + " and more words"
    if kind == 3:
        return "unknown"
    return gold.split()[0]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_metrics_of_fixed_predictions(shared_data, tmp_path, name):
    examples = load_examples(questions_path(shared_data, name), dataset=name)
    path = tmp_path / f"{name}.predictions.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for i, ex in enumerate(examples):
            handle.write(json.dumps({"id": ex.id, "prediction": perturb(i, ex.answers[0])}) + "\n")
    summary = score_predictions(examples, read_predictions(path), yes_no_task=DATASETS.get(name).yes_no)
    n, em_count, em, f1, acc = PINNED[name]
    assert summary["questions"] == n and summary["missing"] == 0
    assert summary["em"] == pytest.approx(em_count / n, abs=1e-12)
    assert summary["em"] == pytest.approx(em, abs=1e-12)
    assert summary["f1"] == pytest.approx(f1, abs=1e-12)
    assert summary.get("acc") == (pytest.approx(acc, abs=1e-12) if acc is not None else None)


def test_hotpot_style_prediction_file_and_missing_ids(shared_data, tmp_path):
    examples = load_examples(questions_path(shared_data, "hotpotqa"), limit=10)
    path = tmp_path / "pred.json"
    path.write_text(json.dumps({"answer": {ex.id: ex.answers[0] for ex in examples[:8]}, "sp": {}}))
    summary = score_predictions(examples, read_predictions(path))
    assert summary["missing"] == 2 and summary["em"] == pytest.approx(0.8) and summary["f1"] == pytest.approx(0.8)


def test_shared_data_loads_with_gold_passages(shared_data):
    from dynaprag.eval.experiment import RunConfig, load_run_examples

    for name, (n, *_rest) in PINNED.items():
        cfg = RunConfig(dataset=name, data_dir=str(shared_data))
        corpus = shared_data / "corpus" / DATASETS.get(name).corpus
        examples = load_run_examples(cfg, str(corpus))
        assert len(examples) == n
        assert all(ex.gold_ids for ex in examples), name  # StrategyQA's are linked from gold_facts
