"""What the loop does after a retrieval, for each reference procedure (scripted signals, real loop).

The loop-level step parity against reference-produced traces lives in ``test_preset_*.py``;
these tests pin the control flow the reference code prescribes, one rule each, on a scripted
generator whose tokens and probabilities are given (``dynaprag.testing``), so a rule that breaks
is named by the test that fails:

- TokenRAG / EntityRAG keep the **whole** regenerated ``generate_max_length`` continuation,
  unchecked, and only then drop the passages (``TokenRAG.inference``, DRAGIN ``generate.py:381-392``;
  EntityRAG ``:477-478``); DRAGIN keeps one sentence (``:688``).
- An empty TokenRAG query still retrieves (``:373-381``; BM25 finds nothing).
- A regenerated continuation that ends at end-of-sequence is accepted and ends the answer: the
  reference keeps the decoded ``<|im_end|>`` in its text, and what it generates after it is cut
  off with it when the answer is read.
- SeaKR's chosen documents accumulate to 5 and all enter the prompt (``reasoner.py:237, 272``),
  whatever the run's k.
"""
from __future__ import annotations

from dynaprag.dynamic.loop import LoopConfig
from dynaprag.testing import ScriptedStep, scripted_loop

UNSURE, SURE = -3.0, -0.001  # p = 0.05 and p = 0.999
QUESTION = "Who directed Jaws?"


def sentence(words: str, logprob: float) -> list[ScriptedStep]:
    return [ScriptedStep(t, logprob=logprob) for t in words.split("|")]


JAWS_UNSURE = sentence(" Jaws| was", SURE) + sentence(" made| by| Bob|.", UNSURE)  # query "Jaws was"


def test_token_rag_keeps_the_whole_regenerated_look_ahead_unchecked():
    draft = JAWS_UNSURE + sentence(" He| is| old|.", SURE)
    # with the passages every sentence is unsure too: the reference does not judge it again
    regenerated = sentence(" Jaws| was| directed| by| Steven|.", UNSURE) + sentence(" So| the| answer| is| X|.", UNSURE)
    loop = scripted_loop("token-rag", draft, with_context=regenerated, options={"trigger.look_ahead": 8},
                         config=LoopConfig(max_new_tokens=64))
    answer = loop.run(QUESTION)
    (event,) = answer.trace.retrievals
    assert event.position == 0
    assert [t.text for t in answer.trace.tokens] == [s.text for s in regenerated[:8]]


def test_entity_rag_keeps_the_whole_regenerated_look_ahead_unchecked():
    draft = sentence(" Jaws| was| made| by| Bob| Smith|.", UNSURE)
    regenerated = (sentence(" Jaws| was| made| by| Steven| Spielberg|.", UNSURE)
                   + sentence(" Bob| Smith| is| old|.", UNSURE))
    loop = scripted_loop("entity-rag", draft, with_context=regenerated, options={"trigger.look_ahead": 10},
                         config=LoopConfig(max_new_tokens=64))
    answer = loop.run(QUESTION)
    assert len(answer.trace.retrievals) == 1
    assert [t.text for t in answer.trace.tokens] == [s.text for s in regenerated[:10]]


def test_dragin_keeps_one_regenerated_sentence_then_judges_without_the_passages():
    draft = sentence(" Jaws| was| made| by| Bob|.", SURE) + sentence(" He| is| old|.", SURE)
    regenerated = sentence(" Jaws| was| directed| by| Steven|.", SURE) + sentence(" Extra| words|.", SURE)
    loop = scripted_loop("dragin", draft, with_context=regenerated,
                         options={"trigger.look_ahead": 9, "trigger.theta": 0.0}, config=LoopConfig(max_new_tokens=64,
                                                                                                     max_retrievals=1))
    answer = loop.run(QUESTION)
    assert len(answer.trace.retrievals) == 1
    texts = [t.text for t in answer.trace.tokens]
    assert texts[:6] == [s.text for s in regenerated[:6]] and texts[6:] == [s.text for s in draft[6:9]]


def test_an_empty_token_rag_query_still_retrieves():
    draft = sentence(" Bob|.", UNSURE)  # every token masked: the query is empty
    loop = scripted_loop("token-rag", draft, with_context=draft, options={"trigger.look_ahead": 2},
                         config=LoopConfig(max_new_tokens=64))
    answer = loop.run(QUESTION)
    (event,) = answer.trace.retrievals
    assert event.query == "" and event.hit_ids == []


def test_a_continuation_ended_by_eos_is_accepted_and_ends_the_answer():
    draft = JAWS_UNSURE + sentence(" He| is| old|.", SURE)
    regenerated = sentence(" Jaws| was| directed| by| Bob|.", UNSURE)  # then end of sequence, with the passages
    loop = scripted_loop("token-rag", draft, with_context=regenerated, options={"trigger.look_ahead": 20},
                         config=LoopConfig(max_new_tokens=64))
    answer = loop.run(QUESTION)
    assert len(answer.trace.retrievals) == 1  # not judged again, though it is as unsure as the draft was
    assert [t.text for t in answer.trace.tokens] == [s.text for s in regenerated]


def test_seakr_documents_accumulate_beyond_k():
    script = (sentence(" Jaws| is| a| film|.", SURE) + sentence(" Spielberg| was| born|.", SURE)
              + sentence(" Paris| is| French|.", SURE) + sentence(" Ulm| is| German|.", SURE))
    loop = scripted_loop("fs-rag", script, with_context=script,
                         choices={"selector": {"name": "seakr-uncertainty", "samples": 2}},
                         config=LoopConfig(k=3, max_new_tokens=64, max_retrievals=10))
    answer = loop.run("Jaws Spielberg Paris Ulm?")
    slots = [len(e.hit_ids) for e in answer.trace.retrievals]
    assert slots[:4] == [1, 2, 3, 4], slots  # one new document per retrieval, all of them kept (k = 3)
