"""TokenRAG parity: :func:`dynaprag.dynamic.methods.confidence.scores.token_rag_check` against ``tokenrag.json``.

The fixture is oneal2000/DRAGIN @4d71efc ``TokenRAG.modifier`` run on 10 synthetic cases, each
with two token styles: ``llama_style`` (leading spaces stripped, as Llama-2's single-token
decode yields; the style the reference was written for) and ``bpe_style`` (``" Paris"``, as
SmolLM2 yields). Our default (``strip_token_spaces=True``) must reproduce llama_style exactly
from either style; ``strip_token_spaces=False`` must reproduce the reference's broken string
search on bpe_style tokens exactly, which pins the difference we document.
"""
from __future__ import annotations

import pytest

from dynaprag.dynamic.methods.confidence import scores as confidence

from .parity import assert_close, load, params

FIXTURE = "tokenrag.json"
CASES = params(FIXTURE, lambda d: d["cases"], lambda c: f"{c['name']}-{c['token_style']}")
LLAMA = params(FIXTURE, lambda d: [c for c in d["cases"] if c["token_style"] == "llama_style"], lambda c: c["name"])


def _settings() -> dict:
    meta = load(FIXTURE)["meta"]
    return {"threshold": meta["hallucination_threshold"], "solver": meta["sentence_solver"]}


def _assert_matches(check: confidence.ConfidenceCheck, case: dict) -> None:
    assert check.fired == case["fired"]
    assert check.sentence_index == case["fired_sentence_index"]
    assert check.kept_text == case["returned"][0]
    assert check.masked == case["curr_masked"]
    if check.fired:
        assert confidence.direct_query(check.masked) == case["query_direct"]
    trace = case["sentence_trace"]
    assert [(s.index, s.sentence, s.start, s.end) for s in check.sentences] == \
           [(t["sid"], case["spacy_sents"][t["sid"]], t["tid"], t["tr"]) for t in trace]
    for s, t in zip(check.sentences, trace):
        assert_close(s.scores, t["probs"], what=f"sentence {s.index} 1-p")
        assert_close([s.score], [t["p"]], what=f"sentence {s.index} p")


@pytest.mark.parametrize("case", LLAMA)
def test_llama_style_tokens_match_the_reference(case):
    check = confidence.token_rag_check(case["text"], case["tokens"], case["logprobs"], **_settings())
    _assert_matches(check, case)


@pytest.mark.parametrize("case", CASES)
def test_literal_search_matches_the_reference_on_both_styles(case):
    check = confidence.token_rag_check(case["text"], case["tokens"], case["logprobs"], **_settings(),
                                       strip_token_spaces=False)
    _assert_matches(check, case)


@pytest.mark.parametrize("case", LLAMA)
def test_bpe_tokens_get_the_intended_llama_behaviour(case):
    """Intended behaviour: SmolLM2's space-prefixed tokens give what Llama-2's tokens give."""
    bpe = next(c for c in load(FIXTURE)["cases"] if c["name"] == case["name"] and c["token_style"] == "bpe_style")
    assert bpe["logprobs"] == case["logprobs"] and [t.lstrip(" ") for t in bpe["tokens"]] == case["tokens"]
    check = confidence.token_rag_check(bpe["text"], bpe["tokens"], bpe["logprobs"], **_settings())
    _assert_matches(check, case)


def test_the_reference_search_breaks_on_bpe_tokens():
    """Documented difference: with bpe tokens the reference scores one token per sentence and
    masks at index -1; the intended behaviour scores the sentence and masks the tokens."""
    case = next(c for c in load(FIXTURE)["cases"]
                if c["name"] == "many_medium_p_tokens" and c["token_style"] == "bpe_style")
    literal = confidence.token_rag_check(case["text"], case["tokens"], case["logprobs"], **_settings(),
                                         strip_token_spaces=False)
    intended = confidence.token_rag_check(case["text"], case["tokens"], case["logprobs"], **_settings())
    assert len(literal.sentences[0].scores) == 1 and literal.masked.startswith(
        "Lake Wales Medical Center is located in Polk County, Florida[xxx] Wales")
    assert len(intended.sentences[0].scores) == len(case["tokens"])
    assert intended.masked == "[xxx] [xxx] [xxx] [xxx] [xxx] [xxx] [xxx] [xxx][xxx] [xxx][xxx] [xxx][xxx]"
