"""SeaKR as its reference runs it (THU-KEG/SeaKR @d75fe70 ``reasoner.py``): pure rules on hand-made
inputs, the procedure through the real loop on the scripted generator, and one demo question on the
real 135M model."""
from __future__ import annotations

import math

import pytest
import torch

from dynaprag.dynamic import probe as probe_module
from dynaprag.dynamic.draft import Decision, Draft
from dynaprag.dynamic.methods.seakr.components import (SeakrSelector, choose_document, final_answer, pick_answer,
                                                      step_stops, without_answer_sentences)
from dynaprag.dynamic.methods.seakr.query import SureWordsQuery, seakr_query, sure_words, word_tokens
from dynaprag.lm.generator import Generation, StepOutput
from dynaprag.lm.sampling import SampledSteps, filter_logits
from dynaprag.testing import InMemoryRetriever, ScriptedStep, scripted_loop
from dynaprag.testing.loop import DEFAULT_PASSAGES

QUESTION = "Who directed Jaws?"
STEP = "Jaws was directed by Steven Spielberg."
TOKENS = [" Jaws", " was", " directed", " by", " Steven", " Spiel", "berg", "."]
LOGPROBS = [math.log(p) for p in (0.5, 0.99, 0.4, 0.97, 0.2, 0.95, 0.8, 0.99)]


# -- the query rule (reasoner.py:120-222) ----------------------------------------------------
def test_words_are_aligned_with_their_tokens():
    words = word_tokens(STEP, TOKENS, LOGPROBS)
    assert [w for w, _ in words[0]] == ["Jaws", "was", "directed", "by", "Steven", "Spielberg"]
    assert words[0][-1][1] == pytest.approx([math.log(0.95), math.log(0.8)])
    # a token longer than spaCy's word absorbs the next word ("Spielberg" + "'s")
    assert word_tokens("Spielberg's film.", [" Spielberg's", " film", "."], [-0.01, -0.02, -0.01]) == \
        [[("Spielberg's", [-0.01]), ("film", [-0.02])]]


def test_sure_words_are_confident_or_in_the_question_or_previous_step():
    # max(1-p) <= 0.1: "was", "by"; in the question: "Jaws", "directed"; "Steven" (0.8) and "Spielberg" (0.2) not
    assert sure_words(STEP, TOKENS, LOGPROBS, QUESTION, None) == "Jaws was directed by"
    assert sure_words(STEP, TOKENS, LOGPROBS, QUESTION, "Steven was born in Ohio.") == "Jaws was directed by Steven"
    assert sure_words(STEP, TOKENS, LOGPROBS, QUESTION, None, prob_threshold=0.25) == \
        "Jaws was directed by Spielberg"


def test_query_is_pos_filtered_with_the_question_as_fallback():
    assert seakr_query(STEP, TOKENS, LOGPROBS, QUESTION, None) == "Jaws directed"  # "was" AUX, "by" ADP
    assert seakr_query("", [], [], "Who was born in St. Louis?", None) == "born St Louis"  # "." -> " "
    unsure = [math.log(0.3)] * len(TOKENS)
    assert seakr_query(STEP, TOKENS, unsure, "Which river?", None) == "river"


def test_a_repeated_query_comes_back_empty():
    draft = Draft(question=QUESTION)
    for i, (piece, lp) in enumerate(zip(TOKENS, LOGPROBS)):
        draft.append(StepOutput(position=i, token_id=i, text=piece, logprob=lp, entropy=1.0), piece)
    decision = Decision.fire("x", keep=0, span=(0, len(TOKENS)))
    query = SureWordsQuery()
    assert query(draft, decision) == "Jaws directed"
    draft.queries.append("Jaws directed")  # what the loop records when it retrieves with it
    assert query(draft, decision) == ""


# -- steps, answers and the document choice ---------------------------------------------------
def test_final_answer_as_the_reference_reads_it():
    assert final_answer("So the answer is Steven Spielberg.") == "Steven Spielberg"
    assert final_answer("He was born in 1946. 1946 is the answer") == "1946"
    assert final_answer("So the answer is 1946") is None  # the reference needs a "," or "." after it
    assert final_answer("Jaws was directed by Spielberg.") is None


def test_stop_strings_of_a_step():
    assert step_stops(False) == ("\n\n", "\nQuestion:", "\nContext", ". ")
    assert step_stops(True) == ("\n\n", "\nQuestion:", "\nContext", "\n", ". ")


def test_the_document_with_the_least_uncertain_step_is_kept():
    assert choose_document([("a.", -3.0), ("", -10.0), ("c.", -5.0)]) == 2  # a blank step ranks last
    assert choose_document([("a.", -1.0), ("b.", -1.0)]) == 0  # ties keep the retriever's order
    assert choose_document([("", -1.0), (" ", -2.0)]) == 0
    assert choose_document([]) is None


def test_the_less_uncertain_answer_wins():
    assert pick_answer("1946", -7.0, "1947", -6.5) == ("1946", "steps")
    assert pick_answer("1946", -6.0, "1947", -6.5) == ("1947", "documents")
    assert pick_answer("1946", -6.0, "1947", -6.0) == ("1947", "documents")  # ties go to the documents
    assert pick_answer("unknown", -9.0, "1947", 0.0) == ("1947", "documents")
    assert pick_answer("1946", 0.0, None, -9.0) == ("1946", "steps")


def test_the_last_step_loses_its_answer_sentence():
    assert without_answer_sentences(["A was born.", "B directed it. So the answer is 1946."]) == \
        ["A was born.", "B directed it."]
    assert without_answer_sentences(["A was born.", "So the answer is 1946."]) == ["A was born."]


def test_sampling_filter_is_top_k_then_top_p():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0])
    finite = lambda lp: torch.isfinite(lp).tolist()  # noqa: E731
    assert finite(filter_logits(logits, 1.0, 2, 1.0)) == [True, True, False, False]
    # probabilities 0.644 0.237 0.087 0.032: top-p 0.9 drops what sums to <= 0.1 from the bottom
    assert finite(filter_logits(logits, 1.0, 0, 0.9)) == [True, True, True, False]
    assert finite(filter_logits(logits, 1.0, 0, 0.5)) == [True, False, False, False]
    # top-p reads the distribution top-k left (0.665 0.245 0.090): now the third token goes too
    assert finite(filter_logits(logits, 1.0, 3, 0.9)) == [True, True, False, False]


# -- the selector on a probe whose uncertainty per document the test chooses -----------------
class UncertaintyByDocument:
    """A probe whose samples agree more the more a document is liked (``spread`` per passage id)."""

    def __init__(self, spread: dict[str, float]):
        self.spread, self.calls = spread, []

    def sample_step(self, k, spec, passages=None, upto=None, answer_text=None):
        self.calls.append(([p.id for p in passages], upto, k))
        rng = torch.Generator().manual_seed(0)
        z = torch.randn(k, 16, generator=rng) * self.spread[passages[-1].id]
        step = StepOutput(position=0, token_id=1, text=" x", logprob=0.0, entropy=0.0)
        gen = [Generation(steps=[step], text=" x.", stopped_by="stop") for _ in range(k)]
        return SampledSteps(greedy=Generation(steps=[step], text=" x.", stopped_by="stop"), samples=gen, embeddings=z)


def test_selector_keeps_one_new_document_per_retrieval_and_accumulates():
    hits = InMemoryRetriever(DEFAULT_PASSAGES).search_one("Jaws Spielberg born Paris Ulm", 4)
    probe = UncertaintyByDocument({"jaws": 1.0, "spielberg": 0.001, "paris": 0.5, "ulm": 0.01})
    sel = SeakrSelector(samples=4, max_docs=2)
    draft = Draft(question=QUESTION)
    draft.retrieving_at = 0
    kept = sel(hits[:3], draft, probe)
    assert [h.id for h in kept] == ["spielberg"]
    assert all(call[0][-1] in {"jaws", "spielberg", "paris"} and call[1] == 0 and call[2] == 4 for call in probe.calls)
    probe.calls.clear()
    draft.passages = [h.passage for h in kept]  # what the loop puts in the knowledge slot
    kept = sel(hits, draft, probe)  # spielberg is in context: the three others are tried after it
    assert [h.id for h in kept] == ["spielberg", "ulm"]
    assert {tuple(c[0]) for c in probe.calls} == {("spielberg", h.id) for h in hits if h.id != "spielberg"}
    draft.passages = [h.passage for h in kept]
    assert [h.id for h in sel(hits, draft, probe)] == ["ulm", "paris"]  # at most max_docs, the oldest leaves
    assert sel([h for h in hits if h.id in ("ulm", "spielberg")], draft, probe) == []  # nothing new: no retrieval


# -- the procedure through the real loop (scripted signals) -----------------------------------
JAWS = [ScriptedStep(t) for t in (" Jaws", " was", " directed", ".")]


def test_an_uncertain_step_is_replaced_by_the_step_with_the_chosen_document():
    answer_sentence = [ScriptedStep(t) for t in (" So", " the", " answer", " is", " 1946", ".")]
    loop = scripted_loop("seakr", JAWS + answer_sentence, with_context=JAWS + answer_sentence,
                         options={"trigger.samples": 4, "selector.samples": 4}, sample_spread=5.0)
    answer = loop.run(QUESTION)
    (event,) = answer.trace.retrievals
    assert event.position == 0 and event.query == "Jaws directed" and len(event.hit_ids) == 1
    assert "eigen score" in event.reason
    # the trigger once (the answer sentence is not judged), the selector once per hit, then the
    # integration: steps (+ forced answer), the documents' greedy answer (+ forced, with samples)
    assert loop.gen.calls["sample_steps"] == 1 + 3 + 2 + 2
    assert answer.text.endswith("So the answer is .") and any("reasoning integration" in n for n in answer.trace.notes)


def test_a_repeated_query_ends_the_reasoning_before_the_step():
    loop = scripted_loop("seakr", JAWS, with_context=JAWS + JAWS,
                         options={"trigger.samples": 4, "selector.samples": 4}, sample_spread=5.0)
    answer = loop.run(QUESTION)
    assert len(answer.trace.retrievals) == 1
    assert any("the answer ends there" in n for n in answer.trace.notes)
    assert "".join(t.text for t in answer.trace.tokens) == " Jaws was directed."


# -- one demo question on the real 135M model --------------------------------------------------
@pytest.mark.slow
def test_seakr_on_the_real_model_follows_the_reference_procedure(lm, monkeypatch):
    from dynaprag.dynamic.methods.seakr import query as query_module
    from dynaprag.pipeline import Pipeline, PipelineConfig
    from dynaprag.retrieval import demo_questions_path
    import json

    calls, queries = [], []
    real_sample_step, real_query = probe_module.LoopProbe.sample_step, query_module.SureWordsQuery.__call__

    def record_sample_step(self, k, spec, **where):
        out = real_sample_step(self, k, spec, **where)
        calls.append((k, spec, out))
        return out

    def record_query(self, draft, decision, probe=None):
        start, end = decision.span
        prev = query_module.previous_step(draft, start)
        expected = seakr_query("".join(draft.pieces[start:end]).strip(), draft.pieces[start:end],
                               [s.logprob for s in draft.steps[start:end]], draft.question, prev)
        query = real_query(self, draft, decision, probe)
        queries.append((decision.keep, start, expected, query))
        return query

    monkeypatch.setattr(probe_module.LoopProbe, "sample_step", record_sample_step)
    monkeypatch.setattr(query_module.SureWordsQuery, "__call__", record_query)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = Pipeline.from_config(PipelineConfig(method="seakr", dtype="float32", max_new_tokens=48), lm=lm)
        lines = demo_questions_path().read_text(encoding="utf-8").splitlines()
        question = next(json.loads(x) for x in lines if '"q02"' in x)["question"]
        answer = pipe.answer(question)
    finally:
        torch.set_num_threads(threads)
    tr = answer.trace
    assert tr.retrievals, "the 135M model is uncertain about this question at θ = -6"
    for k, spec, out in calls:  # every estimate: 20 samples in one batch, one MLP output each
        assert (spec.temperature, spec.top_k, spec.top_p, spec.max_tokens) == (1.0, 50, 0.9, 100)
        if k:
            assert k == 20 and len(out.samples) == 20 and tuple(out.embeddings.shape) == (20, lm.model.config.hidden_size)
    assert all(len(out.samples) <= 20 for _, _, out in calls)
    for i, event in enumerate(tr.retrievals):  # one new document per retrieval; documents accumulate (<= 5)
        assert len(event.hit_ids) == min(i + 1, 5)
        assert event.hit_ids[:-1] == (tr.retrievals[i - 1].hit_ids[-5 + 1:] if i else [])
        assert event.hit_ids[-1] in [h.id for h in pipe.retriever.search_one(event.query, 3)]
    for keep, start, expected, query in queries:  # the query is built from the discarded step
        assert keep == start and query in (expected, "")
    assert [q for *_, q in queries if q] == [e.query for e in tr.retrievals]
    assert answer.text.rstrip().endswith(".") and "So the answer is" in answer.text
    assert any("reasoning integration" in n for n in tr.notes)
