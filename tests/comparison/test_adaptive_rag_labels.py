"""Adaptive-RAG's labels against its own labelling code (starsuzi/Adaptive-RAG @0c88670).

``fixtures/adaptive_rag_labels.json`` holds what the reference decided on fixed inputs
(``scripts/parity/adaptive_rag_reference.py``, which imports the reference's ``evaluate.py``
``normalize_answer`` and ``classifier/preprocess/preprocess_utils.py`` from a checkout): whether each
strategy's prediction was correct, the silver labels of ``label_complexity``, the inductive-bias
labels of ``save_inductive_bias_*`` and the training set of ``concat_and_save_binary_silver``.
Our rules must give the same decisions, the same order, and leave out the same questions.
"""
from __future__ import annotations

import json
from pathlib import Path

from dynaprag.dynamic.methods.adaptive_rag.labels import combine, inductive_label, silver_label
from dynaprag.eval.metrics import exact_match

FIXTURE = json.loads((Path(__file__).resolve().parent / "fixtures" / "adaptive_rag_labels.json").read_text())


def test_correctness_is_the_references_exact_match():
    for q in FIXTURE["questions"]:
        ours = {label: exact_match(pred, q["golds"]) > 0 for label, pred in q["predictions"].items()}
        assert ours == FIXTURE["correct"][q["id"]], q["id"]


def test_silver_labels_match_label_complexity():
    ours = [{"id": q["id"], "dataset": q["dataset"], "label": silver_label(FIXTURE["correct"][q["id"]])}
            for q in FIXTURE["questions"]]
    assert [r for r in ours if r["label"]] == FIXTURE["silver"]  # unanswered questions are left out
    assert {r["label"] for r in FIXTURE["silver"]} == {"A", "B", "C"}


def test_inductive_labels_and_the_training_set_match():
    assert [inductive_label(r["dataset"]) for r in FIXTURE["binary"]] == [r["label"] for r in FIXTURE["binary"]]
    combined = combine(FIXTURE["binary"], FIXTURE["silver"])
    assert [{"id": r["id"], "label": r["label"]} for r in combined] == FIXTURE["combined"]
