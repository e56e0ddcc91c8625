"""Adaptive-RAG's pure rules and its router, unit level: labels, decoding, classifier loading, routing.

Routing runs through the real loop (single and batched) on the scripted decoder with a scripted
classifier double: each question's label is fixed, so what is checked is what the router does with
it (no retrieval, one retrieval with the question and 15 hits, IRCoT's chain of retrievals).
``tests/test_adaptive_rag_real.py`` trains a real head and routes with the real model.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from dynaprag.config import ConfigError
from dynaprag.corpus import Passage
from dynaprag.dynamic.batch import BatchLoop
from dynaprag.dynamic.methods import resolve_method
from dynaprag.dynamic.methods.adaptive_rag import components
from dynaprag.dynamic.methods.adaptive_rag.classifier import (ClassifierNotFound, HeadClassifier, decode_label,
                                                              load_classifier)
from dynaprag.dynamic.methods.adaptive_rag.labels import combine, inductive_label, label_counts, silver_label
from dynaprag.dynamic.methods.adaptive_rag.train import save_classifier, train_head
from dynaprag.eval.silver_labels import label_records, split_words
from dynaprag.testing import ScriptedStep, scripted_loop
from dynaprag.testing.retriever import InMemoryRetriever

SCRIPT = [ScriptedStep(" Spielberg"), ScriptedStep(" was"), ScriptedStep(" born"), ScriptedStep(" in"),
          ScriptedStep(" 1946."), ScriptedStep(" So"), ScriptedStep(" the"), ScriptedStep(" answer"),
          ScriptedStep(" is"), ScriptedStep(" 1946.")]
ROUTED = {"Who directed Jaws?": "A", "Where is Ulm?": "B", "When was the director of Jaws born?": "C"}
PASSAGES = [Passage(f"p{i}", f"Title {i}", f"Ulm Jaws director born passage number {i}.") for i in range(20)]


class ScriptedClassifier:
    """A classifier double: a fixed label per question (unit tests of the router only)."""

    name = "scripted"

    def __init__(self, labels):
        self.labels, self.calls = dict(labels), 0

    def classify(self, questions):
        self.calls += 1
        return [self.labels[q] for q in questions]


@pytest.fixture
def scripted(monkeypatch):
    double = ScriptedClassifier(ROUTED)
    monkeypatch.setattr(components, "load_classifier", lambda name: double)
    return double


# -- labels ------------------------------------------------------------------------------------
@pytest.mark.parametrize("correct, label", [
    ({"A": True, "B": True, "C": True}, "A"), ({"A": False, "B": True, "C": True}, "B"),
    ({"A": False, "B": False, "C": True}, "C"), ({"A": True, "C": True}, "A"), ({}, None),
    ({"A": False, "B": False, "C": False}, None)])
def test_silver_label_is_the_simplest_correct_strategy(correct, label):
    assert silver_label(correct) == label


def test_inductive_labels_and_the_combined_training_set():
    assert [inductive_label(d) for d in ("hotpotqa", "2wikimultihopqa", "musique", "nq", "trivia", "squad")] == \
        ["C", "C", "C", "B", "B", "B"]
    with pytest.raises(ValueError, match="'demo' has no inductive-bias label"):
        inductive_label("demo")
    binary = [{"id": "1", "label": "C"}, {"id": "2", "label": "C"}]
    silver = [{"id": "2", "label": "A"}, {"id": "3", "label": "B"}]
    assert combine(binary, silver) == [{"id": "1", "label": "C"}, {"id": "2", "label": "A"}, {"id": "3", "label": "B"}]
    assert label_counts(combine(binary, silver)) == {"A": 1, "B": 1, "C": 1}


def test_label_records_fall_back_to_the_datasets_label():
    examples = [SimpleNamespace(id="q1", question="Q1?"), SimpleNamespace(id="q2", question="Q2?")]
    answers = {("q1", "A"): {"correct": False}, ("q1", "B"): {"correct": True}, ("q1", "C"): {"correct": True},
               ("q2", "A"): {"correct": False}, ("q2", "B"): {"correct": False}, ("q2", "C"): {"correct": False}}
    records = label_records(examples, answers, "hotpotqa")
    assert [(r["label"], r["source"]) for r in records] == [("B", "silver"), ("C", "inductive")]
    assert "held_out_from 100" in split_words(["hotpotqa"], 100, 50) and "0..99" in split_words(["hotpotqa"], 100, 50)


# -- the classifier ------------------------------------------------------------------------------
def test_decode_label_is_the_argmax_of_the_three_option_scores():
    assert decode_label([0.1, 2.0, -1.0]) == "B"
    assert decode_label([-5.0, -5.0, -6.0]) == "A"  # ties: the first, as np.argmax
    assert decode_label([1e4, 0.0, 1e4 + 1]) == "C"  # no overflow


def test_a_missing_classifier_is_a_one_line_error_and_nothing_is_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNAPRAG_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    load_classifier.cache_clear()
    with pytest.raises(ConfigError, match="needs a classifier: set trigger.classifier"):
        load_classifier("")
    with pytest.raises(ClassifierNotFound, match="train it with `dynaprag adaptive-rag train --name minilm`"):
        load_classifier("minilm")
    with pytest.raises(ClassifierNotFound, match="not on this machine") as info:
        load_classifier("no-such-owner/no-such-adaptive-rag-classifier")
    assert "\n" not in str(info.value)
    load_classifier.cache_clear()


def test_a_head_round_trips_through_safetensors_and_its_config_is_checked(tmp_path):
    head = train_head(np.eye(3, 5, dtype=np.float32), ["A", "B", "C"], epochs=200)
    assert head.accuracy == 1.0
    folder = save_classifier(tmp_path / "h", head, {"encoder": "all-MiniLM-L6-v2", "split": "questions 100..102"})
    loaded = HeadClassifier(folder)
    assert loaded.config["split"] == "questions 100..102" and loaded.config["train_accuracy"] == 1.0
    assert np.allclose(loaded.weight.numpy(), head.weight.numpy())
    config = json.loads((folder / "classifier.json").read_text())
    (folder / "classifier.json").write_text(json.dumps({**config, "labels": ["A", "B"]}))
    with pytest.raises(ConfigError, match="classifier.json: field 'kind'/'labels'"):
        HeadClassifier(folder)
    with pytest.raises(ConfigError, match="label 'D' is not one of A, B, C"):
        train_head(np.eye(2, dtype=np.float32), ["A", "D"])


# -- the router --------------------------------------------------------------------------------
def test_the_preset_resolves_with_the_reference_settings():
    m = resolve_method("adaptive-rag")
    assert m.names == {"trigger": "adaptive-rag", "formulator": "adaptive-rag", "selector": "adaptive-rag",
                       "injector": "in-context"}
    assert (m.selector.single_k, m.selector.multi_k, m.selector.max_paragraphs, m.selector.search_k) == (15, 6, 15, 15)
    assert (m.trigger.max_sentences, m.trigger.reader, m.trigger.needs_probe, m.rolls_back) == (10, True, True, False)
    assert resolve_method("adaptive-rag-minilm").trigger.classifier == "minilm"
    with pytest.raises(ConfigError, match="trigger.route: 'D' is not one of"):
        resolve_method("adaptive-rag", options={"trigger.route": "D"})


def summary(answer):
    return [(r.position, r.query, len(r.hit_ids)) for r in answer.trace.retrievals]


def test_each_route_runs_its_strategy(scripted):
    loop = scripted_loop("adaptive-rag", SCRIPT, retriever=InMemoryRetriever(PASSAGES),
                         options={"trigger.classifier": "scripted"})
    a, b, c = (loop.run(q) for q in ROUTED)
    assert summary(a) == [] and any("route A" in n for n in a.trace.notes)
    assert summary(b) == [(0, "Where is Ulm?", 15)] and any("route B" in n for n in b.trace.notes)  # K = 15
    assert c.trace.retrievals[0].query == "was the director of Jaws born?"  # IRCoT: "When" removed
    assert len(c.trace.retrievals[0].hit_ids) == 6  # ircot_qa: K = 6
    assert len(c.trace.retrievals) >= 2 and c.trace.retrievals[1].query == "Spielberg was born in 1946."
    assert any("IRCoT reader" in n for n in c.trace.notes)
    assert len(components.ROUTES) <= 3  # routes leave with their drafts


def test_questions_routed_differently_decode_in_one_batch(scripted):
    questions = list(ROUTED) * 2
    options = {"trigger.classifier": "scripted"}
    alone = [summary(scripted_loop("adaptive-rag", SCRIPT, retriever=InMemoryRetriever(PASSAGES),
                                   options=options).run(q)) for q in questions]
    loop = scripted_loop("adaptive-rag", SCRIPT, retriever=InMemoryRetriever(PASSAGES), options=options)
    batched = BatchLoop(loop, batch_size=4).run(questions)
    assert [summary(a) for a in batched] == alone
    assert [len(s) > 0 for s in alone] == [False, True, True] * 2


def test_a_forced_route_needs_no_classifier():
    loop = scripted_loop("adaptive-rag", SCRIPT, retriever=InMemoryRetriever(PASSAGES), options={"trigger.route": "B"})
    assert summary(loop.run("Who directed Jaws?")) == [(0, "Who directed Jaws?", 15)]


def test_the_routers_query_and_selector_compose_with_another_trigger():
    loop = scripted_loop("adaptive-rag", SCRIPT, retriever=InMemoryRetriever(PASSAGES),
                         choices={"trigger": {"name": "every-sentence"}})
    got = summary(loop.run("Where is Ulm?"))
    assert got[0] == (0, "Where is Ulm?", 15) and len(got) >= 2  # no route: the single-step query and K


def test_the_router_composes_with_another_axis(scripted):
    loop = scripted_loop("adaptive-rag", SCRIPT, retriever=InMemoryRetriever(PASSAGES),
                         choices={"trigger": {"classifier": "scripted"}, "selector": {"name": "top-k", "k": 2}})
    assert summary(loop.run("Where is Ulm?"))[0][2] == 2


# -- the command line ----------------------------------------------------------------------------
def _cli(*args):
    from typer.testing import CliRunner

    from dynaprag.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "80", "NO_COLOR": "1"})


def test_dynaprag_methods_lists_both_presets():
    out = _cli("methods").output.splitlines()
    assert any(line.startswith("adaptive-rag  adaptive-rag") for line in out)
    assert any(line.startswith("adaptive-rag-minilm  ") for line in out)


@pytest.mark.parametrize("args, message", [
    (("--dataset", "demo"), "'demo' has no inductive-bias label"),
    (("--dataset", "hotpotqa", "--start", "0"), "start 0 leaves no question to evaluate on"),
    (("--dataset", "hotpotqa", "--name", "../x"), "name: a plain folder name"),
])
def test_train_refuses_bad_settings_before_loading_anything(args, message):
    result = _cli("adaptive-rag", "train", *args)
    assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1


def test_a_local_seq2seq_classifier_decodes_as_the_references_generate(tmp_path):
    """A tiny random T5 saved locally (safetensors) stands in for the released classifier: our one
    forward pass must pick what ``run_classifier.py:695-714`` picks from ``generate``'s first scores."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    words = ["<pad>", "</s>", "<unk>", "A", "B", "C", "who", "directed", "jaws", "where", "is", "ulm", "?"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(words), d_model=16, d_ff=32, d_kv=8, num_layers=1,
                                                num_heads=2, decoder_start_token_id=0, pad_token_id=0,
                                                eos_token_id=1)).eval()
    model.save_pretrained(tmp_path / "t5", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "t5")
    load_classifier.cache_clear()
    classifier = load_classifier(str(tmp_path / "t5"))
    questions = ["who directed jaws ?", "where is ulm ?"]
    enc = tokenizer(questions, padding=True, return_tensors="pt")
    first = model.generate(**enc, max_length=2, do_sample=False, return_dict_in_generate=True,
                           output_scores=True).scores[0]
    probs = torch.softmax(torch.stack([first[:, tokenizer("A").input_ids[0]], first[:, tokenizer("B").input_ids[0]],
                                       first[:, tokenizer("C").input_ids[0]]]), dim=0)
    assert classifier.classify(questions) == ["ABC"[int(i)] for i in probs.argmax(dim=0)]
    assert np.allclose(classifier.scores(questions), torch.stack([first[:, i] for i in (3, 4, 5)], 1).tolist(),
                       atol=1e-5)
    load_classifier.cache_clear()


def test_train_again_from_a_labels_file_keeps_its_split(tmp_path):
    from dynaprag.eval.silver_labels import retrain

    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"split": "questions 100..101 (0-based) of x", "held_out_from": 100, "records": [
        {"id": "1", "question": "Who directed Jaws?", "label": "B", "source": "silver"},
        {"id": "2", "question": "Who was born first, the director of Jaws or of Alien?", "label": "C",
         "source": "inductive"}]}))
    run = retrain(labels, out=tmp_path / "head")
    config = HeadClassifier(run.classifier).config
    assert (config["split"], config["held_out_from"], config["sources"]) == (
        "questions 100..101 (0-based) of x", 100, {"silver": 1, "inductive": 1})
    labels.write_text("{}")
    with pytest.raises(ConfigError, match="labels.json: not a labels file"):
        retrain(labels, out=tmp_path / "head")
