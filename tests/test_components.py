"""Unit tests of every trigger, formulator and selector on hand-built steps (no model).

Each trigger is checked against the pure scoring function it calls, on a draft whose signals
the test chose; the loop-level behaviour runs through the real :class:`DynamicLoop` over the
scripted generator of :mod:`dynaprag.testing`.
"""
from __future__ import annotations

import math

import pytest
import torch

from dynaprag.dynamic import scoring
from dynaprag.dynamic.draft import Decision, Draft
from dynaprag.dynamic.methods import resolve_method
from dynaprag.dynamic.methods.confidence.components import (EntityConfidenceTrigger, FlareTrigger, MaskedEntitiesQuery,
                                                           MaskedSpanQuery, MaskedTokensQuery, TokenConfidenceTrigger)
from dynaprag.dynamic.methods.dragin import rind
from dynaprag.dynamic.methods.dragin.inline import AttentionQuery, InlineRindTrigger
from dynaprag.dynamic.queries import ConfidentTokensQuery, SpanQuery
from dynaprag.dynamic.selectors import TopKSelector
from dynaprag.dynamic.triggers import (EveryNTokensTrigger, EverySentenceTrigger, NeverTrigger, OnceTrigger,
                                       TokenProbTrigger)
from dynaprag.lm.generator import StepOutput
from dynaprag.lm.signals import ATTENTION, AttentionRow
from dynaprag.testing import InMemoryRetriever, ScriptedStep, scripted_loop
from dynaprag.testing.loop import DEFAULT_PASSAGES
from floats import approx32

QUESTION = "In what year was the director of Jaws born?"


def draft_of(tokens: list[tuple[str, float]], *, entropy: float = 1.0, finished_sentence: bool = True) -> Draft:
    """A draft of ``(piece, p)`` tokens, as the loop leaves it after the last one."""
    draft = Draft(question=QUESTION)
    for i, (piece, p) in enumerate(tokens):
        draft.append(StepOutput(position=i, token_id=i, text=piece, logprob=math.log(p), entropy=entropy), piece)
    assert draft.sentence_end == finished_sentence
    return draft


SENTENCE = [(" Jaws", 0.9), (" was", 0.95), (" directed", 0.6), (" by", 0.97), (" Steven", 0.05),
            (" Spielberg", 0.3), (".", 0.99)]


# -- triggers ------------------------------------------------------------------------------
def test_never_and_once():
    assert NeverTrigger()(Draft(question=QUESTION)) is None
    first = OnceTrigger()(Draft(question=QUESTION))
    assert first.retrieve and first.keep == 0
    assert OnceTrigger()(draft_of(SENTENCE)) is None


def test_every_n_tokens_and_every_sentence():
    d = draft_of(SENTENCE)
    fired = EveryNTokensTrigger(n=7)(d)
    assert fired.retrieve and fired.keep == 7 and fired.span == (0, 7)
    assert EveryNTokensTrigger(n=8)(d) is None
    assert EverySentenceTrigger(initial=False)(Draft(question=QUESTION)) is None
    s = EverySentenceTrigger()(d)
    assert s.retrieve and s.span == (0, 7) and s.keep == 7


def test_token_prob_fires_below_theta_and_scores_every_token():
    d = draft_of(SENTENCE)
    fired = TokenProbTrigger(theta=0.08)(d)
    assert fired.retrieve and fired.keep == 0 and not TokenProbTrigger.after_retrieval.recheck
    assert set(fired.scores) == {" Steven"}
    low = scoring.low_probability(d.probs(0, 7), 0.08)
    assert [i for i, hit in enumerate(low) if hit] == [4]
    assert fired.token_scores == approx32({i: 1 - p for i, (_, p) in enumerate(SENTENCE)})  # p is float32
    held = TokenProbTrigger(theta=0.01)(d)
    assert not held.retrieve and len(held.token_scores) == 7
    assert TokenProbTrigger()(draft_of(SENTENCE[:3], finished_sentence=False)) is None


def test_flare_retrieves_first_then_fires_at_or_below_theta():
    assert FlareTrigger()(Draft(question=QUESTION)).keep == 0  # look_ahead_pre_retrieval: first
    assert FlareTrigger(initial=False)(Draft(question=QUESTION)) is None
    assert FlareTrigger(theta=0.3)(draft_of(SENTENCE)).retrieve  # " Spielberg" p = 0.3
    assert scoring.low_probability([0.5, 0.8], 0.8, inclusive=True) == [True, True]
    assert scoring.low_probability([0.5, 0.8], 0.8) == [True, False]


class TextsProbe:
    """The one probe call the confidence triggers make: each token's text."""

    def __init__(self, draft):
        self.texts = list(draft.pieces)

    def token_texts(self, ids):
        return [self.texts[i] for i in ids]


def test_token_confidence_judges_the_whole_look_ahead_per_sentence():
    tokens = SENTENCE + [(" He", 0.99), (" was", 0.99), (" born", 0.99), (".", 0.99)]
    d = draft_of(tokens)
    trig = TokenConfidenceTrigger(theta=0.08, look_ahead=11)
    assert trig(draft_of(tokens[:7]), TextsProbe(d)) is None  # the look-ahead is still growing
    fired = trig(d, TextsProbe(d))
    mean = sum(1 - p for _, p in SENTENCE) / len(SENTENCE)  # the first sentence (its tokens + 1, as the reference)
    assert fired.retrieve and fired.keep == 0 and trig.after_retrieval.passages == "accepted"
    assert fired.scores["mean 1-p"] == approx32((mean * 7 + 0.01) / 8)
    assert MaskedTokensQuery(theta=0.08)(d, fired) == " was  by  ."  # p < 0.92 masked, spaces kept
    calm = TokenConfidenceTrigger(theta=0.5, look_ahead=11)(d, TextsProbe(d))
    assert not calm.retrieve and calm.token_scores


def test_entity_confidence_uses_spacy_entities_and_log_probs():
    d = draft_of(SENTENCE)
    fired = EntityConfidenceTrigger(theta=0.4, look_ahead=7)(d, TextsProbe(d))
    assert fired.retrieve and "Steven Spielberg" in fired.scores
    geometric = 1 - math.exp((math.log(0.05) + math.log(0.3)) / 2)
    assert fired.scores["Steven Spielberg"] == approx32(geometric)
    assert MaskedEntitiesQuery(theta=0.4)(d, fired) == "Jaws was directed by ."


def test_inline_rind_trigger_calls_the_paper_equation():
    d = draft_of(SENTENCE, entropy=2.0)
    for j in range(7):  # token j attends 0.5 to token 4 (" Steven") and 0.1 elsewhere
        d.signals.setdefault("attention", {})[j + 1] = AttentionRow(  # token j's own row, filed with token j + 1
            answer=torch.tensor([0.5 if i == 4 else 0.1 for i in range(j + 1)]), question=torch.zeros(0))
    trig = InlineRindTrigger(theta=0.5)
    scores = trig.scores(d, 0, 7)
    att = torch.zeros(7, 7)
    for j in range(7):
        att[j, : j + 1] = d.filed(ATTENTION)[j + 1].answer
    expected = rind.rind_scores(torch.full((7,), 2.0), rind.max_attention_received(att),
                                   torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0]))
    assert torch.allclose(scores, expected)
    fired = trig(d)
    assert fired.retrieve and fired.at == fired.keep == 4 and "' Steven'" in fired.reason  # 2 * 0.5, cut at it
    assert fired.token_scores[4] == approx32(1.0)


# -- formulators ---------------------------------------------------------------------------
def test_span_and_masked_queries():
    d = draft_of(SENTENCE)
    decision = Decision.fire("test", keep=0, span=(0, 7))
    assert SpanQuery()(d, decision) == "Jaws was directed by Steven Spielberg."
    assert MaskedSpanQuery(beta=0.4)(d, decision) == "Jaws was directed by  ."  # FLARE: masks become spaces
    assert MaskedSpanQuery(beta=0.2)(d, decision) == "Jaws was directed by  Spielberg."
    assert MaskedSpanQuery(beta=1.0)(d, decision) == ""  # everything masked: no retrieval
    assert MaskedTokensQuery(theta=0.5)(d, decision) == "Jaws was directed by [xxx] [xxx].".replace("[xxx]", "")


def test_attention_query_keeps_top_words_in_order():
    d = draft_of(SENTENCE)
    d.question_pieces = [" director", " of", " Jaws"]
    d.signals["attention"] = {7: AttentionRow(answer=torch.tensor([0.05, 0.0, 0.7, 0.0, 0.6, 0.2, 0.0]),
                                              question=torch.tensor([0.9, 0.8, 0.1]))}
    query = AttentionQuery(n=3)(d, Decision.fire("x", keep=6, at=6))
    assert query == "director directed Steven"  # "of"/"by" are stop words; order as in the context


def test_confident_tokens_query():
    d = draft_of(SENTENCE)
    assert ConfidentTokensQuery(min_prob=0.5)(d, Decision.fire("x", keep=7)) == \
        f"{QUESTION} Jaws was directed by."


# -- selectors (through the probe of the scripted loop) ------------------------------------
def _hits(n=3):
    return InMemoryRetriever(DEFAULT_PASSAGES).search_one("Jaws Spielberg born 1946 Paris", n)


def test_top_k_keeps_the_retrievers_order():
    hits = _hits()
    assert TopKSelector()(hits, Draft(question=QUESTION)) == hits


def test_seakr_selector_orders_by_uncertainty_and_trigger_thresholds_it():
    loop = scripted_loop("seakr", [ScriptedStep(" 1946.")], sample_spread=0.0)
    answer = loop.run(QUESTION)
    assert not answer.trace.retrievals  # 20 identical samples: eigen score below -6, no retrieval
    assert loop.gen.calls["sample_steps"] >= 1
    loop = scripted_loop("seakr", [ScriptedStep(" 1946.")], options={"trigger.samples": 4, "selector.samples": 4},
                         sample_spread=5.0)
    answer = loop.run(QUESTION)
    assert answer.trace.retrievals and "eigen score" in answer.trace.retrievals[0].reason
    assert loop.gen.calls["sample_steps"] >= 1 + 3  # the trigger once, the selector once per hit


def test_selfrag_trigger_and_critique_read_reflection_tokens():
    from dynaprag.dynamic.methods.selfrag.components import RELEVANCE, SUPPORT, UTILITY

    special = ("[Retrieval]", "[No Retrieval]") + RELEVANCE + SUPPORT + UTILITY
    loop = scripted_loop("self-rag", [ScriptedStep(" 1946.")], special_tokens=special,
                         next_token_logprobs={"[Retrieval]": 0.0, "[No Retrieval]": -3.0})
    answer = loop.run(QUESTION)
    assert answer.trace.retrievals and "p([Retrieval])" in answer.trace.retrievals[0].reason
    assert loop.gen.calls["next_logprobs"] >= 1  # the decision
    assert len(answer.trace.retrievals[0].hit_ids) == 1  # one segment per hit, the best kept (test_selfrag.py)
    quiet = scripted_loop("self-rag", [ScriptedStep(" 1946.")], special_tokens=special,
                          next_token_logprobs={"[Retrieval]": -3.0, "[No Retrieval]": 0.0})
    assert not quiet.run(QUESTION).trace.retrievals


def test_a_component_the_model_cannot_serve_fails_at_build_time():
    from dynaprag.dynamic.component import CapabilityError, check_model
    from dynaprag.testing import ScriptedGenerator

    method = resolve_method("self-rag")
    with pytest.raises(CapabilityError, match=r"\[Retrieval\].*self-rag-prompted"):
        check_model(method.components(), ScriptedGenerator([]))
