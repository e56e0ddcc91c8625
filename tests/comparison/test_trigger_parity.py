"""The presets' own triggers and formulators on the reference fixtures' inputs.

``test_tokenrag.py``, ``test_entityrag.py``, ``test_flare.py`` and ``test_dragin.py`` compare
the pure scoring functions with the reference outputs. Here the same inputs go through the
components a preset actually runs (resolved with ``resolve_method``, so the preset's settings
and the components' defaults are part of what is tested): the draft is the fixture's tokens
with their log-probs, entropies and, for DRAGIN, attention; a scripted probe hands the trigger
the fixture's token strings and attention instead of a model pass (the signals are the
reference's own). Compared with the reference: whether it fires, which sentence, the text kept
before the cut (``prev``), the query, and what is done after the retrieval.
"""
from __future__ import annotations

import math

import pytest
import torch

from dynaprag import nlp
from dynaprag.dynamic.draft import AfterRetrieval, Draft
from dynaprag.dynamic.methods import resolve_method
from dynaprag.lm.generator import StepOutput

from .parity import load, params


class _Step(StepOutput):
    """A step whose probability is given exactly (FLARE compares Python floats, ``p <= 0.8``)."""

    def __init__(self, prob: float, **kwargs):
        super().__init__(**kwargs)
        self._prob = prob

    @property
    def prob(self) -> float:
        return self._prob


class FixtureProbe:
    """The fixture's signals where the trigger would ask the model (``Probe`` methods it reads)."""

    space_marker = "Ġ"
    newline_id = 198

    def __init__(self, tokens=None, pieces=None, heads=None):
        self.tokens, self._pieces, self.heads = tokens, pieces, heads

    def token_texts(self, ids):
        return list(self.tokens[: len(ids)])

    def pieces(self, ids):
        return list(self._pieces[: len(ids)])

    def attention_of(self, ids):
        return self.heads[:, : len(ids), : len(ids)]


def aligned_pieces(text: str, tokens: list[str]) -> list[str]:
    """``text`` cut at the tokens (searched in order, as the reference does), so the pieces join to ``text``."""
    pieces, pos = [], 0
    for tok in tokens:
        at = text.find(tok, pos)
        assert at >= 0, f"token {tok!r} not found in {text[pos:]!r}"
        pieces.append(text[pos:at + len(tok)])
        pos = at + len(tok)
    pieces[-1] += text[pos:]
    return pieces


def draft_of(pieces: list[str], logprobs=None, probs=None, entropies=None, ids=None) -> Draft:
    draft = Draft(question="Q?")
    for i, piece in enumerate(pieces):
        kwargs = dict(position=i, token_id=ids[i] if ids else i, text=piece,
                      logprob=logprobs[i] if logprobs else math.log(max(probs[i], 1e-300)),
                      entropy=entropies[i] if entropies else 0.0)
        draft.append(_Step(probs[i], **kwargs) if probs else StepOutput(**kwargs), piece)
    return draft


def normalised(text: str) -> str:
    return " ".join(text.split())


# ---- TokenRAG ---------------------------------------------------------------------------------
# The llama-style cases: tokens without their leading space, as the reference's search expects
# them (our trigger strips token spaces to get that behaviour on byte-level BPE, lookahead.py).
TOKEN_CASES = params("tokenrag.json", lambda d: [c for c in d["cases"] if c["token_style"] == "llama_style"],
                     lambda c: c["name"])


@pytest.mark.parametrize("case", TOKEN_CASES)
def test_token_rag_preset_fires_cuts_and_queries_as_the_reference(case):
    method = resolve_method("token-rag", dataset="hotpotqa")  # θ 0.08, solver avg: the fixture's config
    assert method.trigger.theta == load("tokenrag.json")["meta"]["hallucination_threshold"]
    pieces = aligned_pieces(case["text"], case["tokens"])
    draft = draft_of(pieces, logprobs=case["logprobs"])
    draft.ended = True  # judge the look-ahead as it is (the fixture's continuation is shorter than 100 tokens)
    decision = method.trigger(draft, FixtureProbe(tokens=case["tokens"]))
    assert decision.retrieve == case["fired"]
    if not case["fired"]:
        return
    assert normalised(draft.span_text(0, decision.keep)) == normalised(case["prev_text"])
    query = method.formulator(draft, decision, None)
    assert query.split() == case["query_direct"].split()
    # TokenRAG.inference (generate.py:381-392): the regenerated continuation is kept whole, unchecked
    assert method.trigger.after_retrieval == AfterRetrieval(recheck=False, accept_tokens=method.trigger.look_ahead,
                                                            passages="accepted")
    assert method.formulator.retrieves_empty_query  # generate.py:373-381 retrieves with "" too


# ---- EntityRAG --------------------------------------------------------------------------------
ENTITY_CASES = params("entityrag.json", lambda d: [c for c in d["cases"] if not c["error"]],
                      lambda c: f"{c['name']}-{c['entity_solver']}")


@pytest.mark.parametrize("case", ENTITY_CASES)
def test_entity_rag_trigger_fires_cuts_and_queries_as_the_reference(case):
    method = resolve_method("entity-rag", {"trigger": {"entity_solver": case["entity_solver"]}})
    assert method.trigger.theta == load("entityrag.json")["meta"]["hallucination_threshold"]
    assert method.trigger.sentence_solver == load("entityrag.json")["meta"]["sentence_solver"]
    draft = draft_of(aligned_pieces(case["text"], case["tokens"]), logprobs=case["logprobs"])
    draft.ended = True
    decision = method.trigger(draft, FixtureProbe(tokens=case["tokens"]))
    assert decision.retrieve == case["fired"]
    if not case["fired"]:
        return
    assert normalised(draft.span_text(0, decision.keep)) == normalised(case["prev_text"])
    assert method.formulator(draft, decision, None).split() == case["query_direct"].split()
    assert method.trigger.after_retrieval.accept_tokens == method.trigger.look_ahead  # EntityRAG.inference = TokenRAG's (:477-478)


# ---- FLARE ------------------------------------------------------------------------------------
FLARE_CASES = params("flare.json", lambda d: d["cases"], lambda c: c["name"])


@pytest.mark.parametrize("case", FLARE_CASES)
def test_flare_preset_retrieves_first_then_when_the_reference_does(case):
    """``use_as_query`` (templates.py:737-760) retrieves when any look-ahead token has ``p <= 0.8``
    (``look_ahead_filter_prob``), boundary included; before that, the question
    (``look_ahead_pre_retrieval: first``, openai_api.py:377-385)."""
    method = resolve_method("flare", dataset="2wikimultihopqa")
    empty = Draft(question="Q?")
    first = method.trigger(empty, None)
    assert first is not None and first.retrieve and first.keep == 0
    assert method.formulator(empty, first, None) == "Q?"
    draft, fired = Draft(question="Q?"), []
    pieces = aligned_pieces(case["text"], case["tokens"])
    for i, (piece, p) in enumerate(zip(pieces, case["probs"])):
        draft.append(_Step(p, position=i, token_id=i, text=piece, logprob=math.log(p), entropy=0.0), piece)
        decision = method.trigger(draft, None)
        if decision is not None and decision.retrieve:
            fired.append(decision)
        if draft.sentence_end:
            draft.sentence_start = draft.checked = len(draft.steps)
    assert bool(fired) == case["retrieval_triggered"]
    if fired and len(nlp.sentences(case["text"])) == 1:  # one sentence: the reference masks the same span
        assert method.formulator(draft, fired[0], None) == case["query"].strip()


def test_flare_fires_on_a_token_exactly_at_theta():
    """``use_as_query`` tests ``p <= low_prob`` (templates.py:746-752), so one token at exactly
    p = 0.8 among confident ones retrieves; its query keeps every token (none is <= β = 0.4)."""
    method = resolve_method("flare", dataset="2wikimultihopqa")
    draft = Draft(question="Q?")
    draft.at_start = False
    for i, (piece, p) in enumerate(zip([" Jaws", " was", " directed", " by", " Spielberg", "."],
                                       [0.95, 0.95, 0.95, 0.95, 0.8, 0.95])):
        draft.append(_Step(p, position=i, token_id=i, text=piece, logprob=math.log(p), entropy=0.0), piece)
    decision = method.trigger(draft, None)
    assert decision is not None and decision.retrieve and decision.keep == 0
    assert method.formulator(draft, decision, None) == "Jaws was directed by Spielberg."


# ---- DRAGIN -----------------------------------------------------------------------------------
def _dragin_draft(tokenizer, q: dict, entropies=None) -> tuple[Draft, FixtureProbe]:
    ids = q["continuation_ids"]
    texts = [tokenizer.decode(ids[:i]) for i in range(len(ids) + 1)]
    pieces = [texts[i + 1][len(texts[i]):] for i in range(len(ids))]
    assert "".join(pieces) == q["continuation_text"]
    draft = draft_of(pieces, logprobs=[0.0] * len(ids), entropies=entropies or q["token_entropies"], ids=ids)
    heads = torch.diag(torch.tensor(q["token_attn_max_mean"], dtype=torch.float64)).unsqueeze(0)
    return draft, FixtureProbe(tokens=pieces, pieces=q["continuation_tokens"], heads=heads)


DRAGIN_RUNS = params("dragin.json", lambda d: [(q, r) for q in d["questions"] for r in q["runs"]],
                     lambda qr: f"{qr[0]['id'][:8]}-t{qr[1]['threshold']}-k{qr[1]['retrieve_keep_top_k']}")


@pytest.mark.parametrize("qr", DRAGIN_RUNS)
def test_dragin_trigger_fires_and_cuts_where_the_reference_does(qr, lm):
    q, run = qr
    method = resolve_method("dragin", {"trigger": {"theta": float(run["threshold"]),
                                                   "look_ahead": len(q["continuation_ids"])}})
    draft, probe = _dragin_draft(lm.tokenizer, q)
    decision = method.trigger(draft, probe)
    assert decision.retrieve == run["hallucination"]
    if not decision.retrieve:
        return
    # AttnWeightRAG.inference keeps prev = " ".join(sentences[:sid]) (generate.py:520, 676-690)
    assert normalised(draft.span_text(0, decision.keep)) == normalised(run["prev_text"])
    assert decision.observation.curr_words == run["curr_tokens"]
    assert decision.observation.hits == run["curr_hit"]
    assert method.trigger.after_retrieval == AfterRetrieval(recheck=False, passages="accepted")


def _after_newline_sentence(q: dict) -> int | None:
    sents = q["spacy_sents"]
    return next((i for i in range(1, len(sents)) if "\n" in sents[i - 1]), None)


@pytest.mark.parametrize("q", params("dragin.json", lambda d: [q for q in d["questions"] if _after_newline_sentence(q)],
                                     lambda q: q["id"][:8]))
def test_dragin_keeps_a_sentence_whose_word_span_is_empty(q, lm):
    """A spaCy sentence containing a newline gets an empty word span and the next sentence absorbs
    its words (the reference's quirk); when that next sentence fires, the reference still keeps the
    newline sentence's text (``prev``, generate.py:520). The entropies of every token before the
    firing sentence are zeroed so that it is the first to fire."""
    sents, target = q["spacy_sents"], _after_newline_sentence(q)
    text = q["continuation_text"]
    pos = 0
    for sent in sents[:target]:
        pos = text.find(sent, pos) + len(sent)
    begins = text.find(sents[target], pos)
    ids = q["continuation_ids"]
    starts = [len(lm.tokenizer.decode(ids[:i])) for i in range(len(ids))]
    entropies = [h if s >= begins else 0.0 for h, s in zip(q["token_entropies"], starts)]
    method = resolve_method("dragin", {"trigger": {"theta": 0.05, "look_ahead": len(ids)}})
    draft, probe = _dragin_draft(lm.tokenizer, q, entropies)
    decision = method.trigger(draft, probe)
    assert decision.retrieve and decision.observation.prev_text == " ".join(sents[:target])
    assert normalised(draft.span_text(0, decision.keep)) == normalised(" ".join(sents[:target]))
