"""Adaptive-RAG end to end on the real SmolLM2-135M, BM25 over the demo corpus and the real MiniLM encoder.

1. The paper's procedure, small: ``silver_labels.build`` answers a 2-question training split
   (question 0 of the file held out) with the three forced routes, batched, checkpointing every
   answer; a second call resumes and answers nothing; the labels and the trained head state the split.
2. A head trained on a handful of hand-made silver labels routes real questions through the real
   loop at batch 3: each question gets exactly the strategy its label names.

Budgets are cut (8-12 tokens, IRCoT's reader off) so the module stays cheap; the routes' own
rules are unit-tested in ``tests/test_adaptive_rag.py``.
"""
from __future__ import annotations

import json

import pytest

from dynaprag.dynamic.methods.adaptive_rag.classifier import HeadClassifier, load_classifier
from dynaprag.dynamic.methods.adaptive_rag.train import HeadSettings, train_classifier
from dynaprag.eval.silver_labels import build
from dynaprag.retrieval.config import demo_corpus_path, demo_questions_path

pytestmark = pytest.mark.usefixtures("one_thread")

CHEAP = ["max_new_tokens=8", "trigger.reader=false"]


def test_silver_labels_are_made_on_the_training_split_only_and_resume(tmp_path, demo_pipeline):
    lines = demo_questions_path().read_text(encoding="utf-8").splitlines()[:2]
    questions = tmp_path / "hotpotqa.jsonl"
    questions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    held_out = json.loads(lines[0])["id"]
    kwargs = dict(questions=str(questions), start=1, n=1, name="tiny", work=tmp_path / "work", out=tmp_path / "head",
                  batch_size=3, overrides=[*CHEAP, f"retrieval.corpus={demo_corpus_path()}"],
                  settings=HeadSettings(epochs=50), progress=False, lm=demo_pipeline("sr-rag").lm,
                  retriever=demo_pipeline("sr-rag").retriever)
    run = build("hotpotqa", **kwargs)
    log = tmp_path / "work" / "hotpotqa" / "answers.jsonl"
    answered = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted((r["id"], r["route"]) for r in answered) == sorted(
        (json.loads(line)["id"], route) for line in lines[1:] for route in "ABC")
    assert held_out not in {r["id"] for r in answered}  # the evaluated question is never answered
    assert {r["route"]: r["retrievals"] > 0 for r in answered} == {"A": False, "B": True, "C": True}
    assert [r["id"] for r in run.records] == [json.loads(line)["id"] for line in lines[1:]]
    assert all(r["label"] == "C" or r["source"] == "silver" for r in run.records)  # unanswered: hotpotqa -> C
    labels = json.loads(run.labels_file.read_text())
    assert labels["held_out_from"] == 1 and "evaluate only on questions 0..0" in labels["split"]
    head = HeadClassifier(run.classifier)
    assert head.config["held_out_from"] == 1 and head.config["split"] == labels["split"]
    assert "t5-large" in head.config["deviation"]

    run_again = build("hotpotqa", **kwargs)
    assert log.read_text().count("\n") == len(answered)  # resumed: nothing answered twice
    assert run_again.records == run.records


SILVER = [("What is the capital of France?", "A"), ("What is the capital of Germany?", "A"),
          ("Who directed the film Inception?", "B"), ("Who directed the film Jaws?", "B"),
          ("In what year was the director of Jaws born?", "C"),
          ("Which river flows through the city where Albert Einstein was born?", "C")]


def test_a_trained_head_routes_real_questions_in_one_batch(tmp_path, demo_pipeline):
    records = [{"id": str(i), "question": q, "label": label, "source": "silver"} for i, (q, label) in enumerate(SILVER)]
    folder = train_classifier(records, tmp_path / "head", split="hand-made silver labels (test)",
                              settings=HeadSettings(epochs=300))
    head = load_classifier(str(folder))
    questions = ["What is the capital of France?", "Who directed the film Inception?",
                 "In what year was the director of Jaws born?"]
    routes = head.classify(questions)
    assert routes == ["A", "B", "C"]  # a linear head fits six separable questions
    pipe = demo_pipeline("adaptive-rag")
    answers = dict(pipe.answer_many(questions, batch_size=3, max_new_tokens=12,
                                    options={"trigger.classifier": str(folder), "trigger.reader": False}))
    a, b, c = (answers[i] for i in range(3))
    assert not a.trace.retrievals and any("route A" in n for n in a.trace.notes)
    assert [r.query for r in b.trace.retrievals] == [questions[1]] and len(b.trace.retrievals[0].hit_ids) > 3
    assert c.trace.retrievals[0].query == "In year was the director of Jaws born?"  # IRCoT removes "what"
    assert all(answer.text.strip() for answer in (a, b, c))
