"""EntityRAG parity: :func:`dynaprag.dynamic.methods.confidence.scores.entity_rag_check` against ``entityrag.json``.

The fixture is oneal2000/DRAGIN @4d71efc ``EntityRAG.modifier`` on 6 synthetic cases (bpe-style
tokens) × ``entity_solver`` ∈ {avg, max, min, first}, θ = 0.4, ``sentence_solver`` avg, with
spaCy ``en_core_web_sm`` 3.8.0 (our :mod:`dynaprag.nlp` loads the same pipeline).
"""
from __future__ import annotations

import pytest

from dynaprag import nlp
from dynaprag.dynamic.methods.confidence import scores as confidence

from .parity import assert_close, load, params

FIXTURE = "entityrag.json"
CASES = params(FIXTURE, lambda d: d["cases"], lambda c: f"{c['name']}-{c['entity_solver']}")


@pytest.mark.parametrize("case", CASES)
def test_entities_intervals_and_scores(case):
    meta = load(FIXTURE)["meta"]
    check = confidence.entity_rag_check(case["text"], case["tokens"], case["logprobs"],
                                        meta["hallucination_threshold"], case["entity_solver"],
                                        meta["sentence_solver"])
    trace = case["trace"]
    assert nlp.sentences(case["text"]) == trace["sentences"]
    assert check.entities == trace["entity"]
    assert [[list(i) for i in spans] for spans in check.intervals] == trace["entity_intv"]
    for ours, ref in zip(check.entity_logprobs, trace["entity_prob"]):
        assert_close(ours, ref, what="entity log-prob")
    assert [s.index for s in check.sentences] == [s["sid"] for s in trace["sentence_p"]]
    for s, ref in zip(check.sentences, trace["sentence_p"]):
        assert_close(s.scores, ref["probs"], what=f"sentence {s.index} 1-p")
        assert_close([s.score], [ref["p"]], what=f"sentence {s.index} p")


@pytest.mark.parametrize("case", CASES)
def test_decision_masking_and_query(case):
    meta = load(FIXTURE)["meta"]
    assert case["error"] is None
    check = confidence.entity_rag_check(case["text"], case["tokens"], case["logprobs"],
                                        meta["hallucination_threshold"], case["entity_solver"],
                                        meta["sentence_solver"])
    assert check.fired == case["fired"]
    assert check.sentence_index == case["fired_sentence_index"]
    assert check.masked == case["curr_masked"]
    if check.fired:
        assert check.kept_text == case["prev_text"]
        assert confidence.direct_query(check.masked) == case["query_direct"]
    else:
        assert check.kept_text == case["text"]
