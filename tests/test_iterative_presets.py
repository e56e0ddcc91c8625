"""IRCoT and Iter-RetGen: the reference's text rules as pure functions, the components on scripted
signals through the real loop (batch 1 and batched), and the CLI listing.

Whole-loop parity with the reference code on the real model is ``tests/comparison/test_iterative_loops.py``.
"""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dynaprag.corpus import Passage
from dynaprag.dynamic.batch import BatchLoop
from dynaprag.dynamic.draft import Draft
from dynaprag.dynamic.methods.ircot.components import (IrcotSelector, closely_matching, exit_reason, fuzz_ratio,
                                                      is_reasoning_sentence, lcs_length, remove_wh_words)
from dynaprag.dynamic.methods.iter_retgen.components import round_query
from dynaprag.dynamic.methods import resolve_method
from dynaprag.retrieval.base import Hit
from dynaprag.testing import ScriptedStep, scripted_loop

QUESTION = "Who directed Jaws?"
CHAIN = [ScriptedStep(" Jaws"), ScriptedStep(" is"), ScriptedStep(" a"), ScriptedStep(" film."),
         ScriptedStep(" So"), ScriptedStep(" it"), ScriptedStep(" is"), ScriptedStep(" old."),
         ScriptedStep(" Spielberg"), ScriptedStep(" directed"), ScriptedStep(" it."),
         ScriptedStep(" So"), ScriptedStep(" the"), ScriptedStep(" answer"), ScriptedStep(" is"),
         ScriptedStep(" Spielberg.")]


# -- pure functions ------------------------------------------------------------------------
def test_reasoning_sentences_as_the_reference_lists_them():
    assert is_reasoning_sentence("So the answer is Paris.")
    assert is_reasoning_sentence("Thus, both are in Europe.") and is_reasoning_sentence("hence yes")
    assert is_reasoning_sentence("That is, 1946.") and is_reasoning_sentence("Therefore no.")
    assert is_reasoning_sentence("He was 1,990 - 1,946 = 44 years old.")
    assert not is_reasoning_sentence("Somewhere in Ohio he was born.")  # "so" needs a space or comma after it
    assert not is_reasoning_sentence("Spielberg was born in 1946.")


def test_question_words_are_removed_on_single_spaces():
    assert remove_wh_words("In what year was the director of Jaws born?") == "In year was the director of Jaws born?"
    assert remove_wh_words("Who is older, Gates or Allen?") == "older, Gates or Allen?"
    assert remove_wh_words("What  is it") == " it"  # split(" ") keeps the empty word of a double space


@pytest.mark.parametrize("a, b, lcs, ratio", [("abc", "abd", 2, 200 / 3), ("", "", 0, 100.0), ("abc", "", 0, 0.0),
                                              ("abcbdab", "bdcaba", 4, 800 / 13), ("Paris", "Paris", 5, 100.0)])
def test_fuzz_ratio_is_the_normalised_indel_similarity(a, b, lcs, ratio):
    assert lcs_length(a, b) == lcs
    assert fuzz_ratio(a, b) == pytest.approx(ratio)


def test_fuzz_ratio_equals_rapidfuzz():
    fuzz = pytest.importorskip("rapidfuzz.fuzz")
    import random

    rng = random.Random(0)
    for _ in range(500):
        a = "".join(rng.choice("ab c.") for _ in range(rng.randint(0, 60)))
        b = "".join(rng.choice("ab c.") for _ in range(rng.randint(0, 60)))
        assert fuzz_ratio(a, b) == pytest.approx(fuzz.ratio(a, b))


def test_close_paragraphs_are_the_same_paragraph():
    titles, paras = ["Jaws (film)"], ["Jaws is a 1975 film directed by Steven Spielberg."]
    assert closely_matching(titles, paras, "Jaws (film)", paras[0])
    assert closely_matching(titles, paras, "Jaws (film)", "Jaws is a 1975 film directed by Steven Spielberg!")
    assert not closely_matching(titles, paras, "Jaws 2", paras[0])
    assert not closely_matching(titles, paras, "Jaws (film)", "Jaws 2 is a 1978 film directed by Jeannot Szwarc.")


def test_exit_rule():
    assert exit_reason([], 10) is None
    assert exit_reason(["A fact."], 10) is None
    assert exit_reason(["A fact.", ""], 10) == "empty sentence"
    assert exit_reason(["So the answer is: Paris."], 10) == "the sentence gives the answer"
    assert exit_reason(["Answer is Paris."], 10) is None  # the regex needs " answer is" after something
    assert exit_reason(["x."] * 3, 3) == "3 sentences"


def test_selector_accumulates_dedups_and_caps():
    old = [Passage(f"p{i}", f"T{i}", f"text {i}") for i in range(3)]
    draft = Draft(question=QUESTION, passages=list(old))
    hits = [Hit(old[1], 1.0), Hit(Passage("n1", "New", "a new paragraph"), 0.9),
            Hit(Passage("n2", "Long", " ".join(["w"] * 601)), 0.8), Hit(Passage("n3", "Three", "three"), 0.7),
            Hit(Passage("n4", "Four", "four"), 0.6)]
    kept = IrcotSelector(max_paragraphs=5)(hits, draft)
    assert [h.passage.id for h in kept] == ["p0", "p1", "p2", "n1", "n3"]


def test_round_query():
    assert round_query("Q?", "") == "Q?"
    assert round_query("Q?", "A. So the answer is B.") == "Q? A. So the answer is B."


# -- the components through the real loop on scripted signals -------------------------------
def run(method: str, batch: int = 1, questions=(QUESTION,), **kwargs):
    loop = scripted_loop(method, CHAIN, with_context=CHAIN, **kwargs)
    if batch == 1:
        return [loop.run(q) for q in questions]
    return BatchLoop(loop, batch_size=batch).run(list(questions))


def test_ircot_queries_each_factual_sentence_and_reads_at_the_end():
    answer, = run("ircot")
    rets = answer.trace.retrievals
    assert [r.position for r in rets] == [0, 4, 8, 11]
    # the question without "Who"; after "So it is old." (reasoning) the last factual sentence again
    assert [r.query for r in rets] == ["directed Jaws?", "Jaws a film.", "Jaws a film.", "Spielberg directed it."]
    assert all(set(rets[i].hit_ids) <= set(rets[i + 1].hit_ids) for i in range(len(rets) - 1))  # accumulated
    assert answer.short == "Spielberg" and answer.text.endswith("So the answer is Spielberg.")
    assert any("IRCoT reader" in n for n in answer.trace.notes) and any("IRCoT stops" in n for n in answer.trace.notes)


def test_ircot_stops_at_its_sentence_limit_and_without_reader_reads_the_chain():
    answer, = run("ircot-noreader", choices={"trigger": {"max_sentences": 2}})
    assert [r.position for r in answer.trace.retrievals] == [0, 4]
    assert answer.text == "Jaws is a film. So it is old."
    assert not any("IRCoT reader" in n for n in answer.trace.notes)


def test_ircot_searches_its_own_k():
    answer, = run("ircot", choices={"selector": {"k": 1}})
    assert len(answer.trace.retrievals[0].hit_ids) == 1


def test_iter_retgen_regenerates_whole_answers_from_scratch():
    answer, = run("iter-retgen", config=None)
    rets = answer.trace.retrievals
    assert [r.position for r in rets] == [0, 0]
    full = "Jaws is a film. So it is old. Spielberg directed it. So the answer is Spielberg."
    assert rets[0].query == QUESTION and rets[1].query == f"{QUESTION} {full}"
    assert "".join(t.text for t in rets[1].discarded).strip() == full  # round 1, rolled back
    # round 2 equals round 1: a third round would repeat it (greedy), so it ends
    assert any("repeats the previous answer" in n for n in answer.trace.notes)
    assert answer.short == "Spielberg"


def test_iter_retgen_one_round_is_single_retrieval():
    answer, = run("iter-retgen", choices={"trigger": {"rounds": 1}})
    assert [r.position for r in answer.trace.retrievals] == [0]


@pytest.mark.parametrize("method", ["ircot", "ircot-noreader", "iter-retgen"])
def test_batched_answers_equal_single(method):
    questions = [QUESTION, "Where is Ulm?", "What is Paris?", "When was Spielberg born?"]

    def summary(a):
        return (a.text, a.short, [(r.position, r.query, r.hit_ids) for r in a.trace.retrievals])

    alone = [summary(a) for a in run(method, 1, questions)]
    for batch in (2, 3, 4):
        assert [summary(a) for a in run(method, batch, questions)] == alone


def test_presets_resolve_and_compose_with_another_injector():
    m = resolve_method("ircot", {"injector": {"name": "prag"}})
    assert m.names == {"trigger": "ircot", "formulator": "ircot-sentence", "selector": "ircot-paragraphs",
                       "injector": "prag"}
    assert not resolve_method("ircot").rolls_back and resolve_method("iter-retgen").rolls_back
    assert resolve_method("iter-retgen").settings()["trigger"] == {"name": "iter-retgen", "rounds": 3}
    assert resolve_method("ircot").settings()["selector"]["k"] == 6


def test_methods_lists_the_families():
    from dynaprag.cli import app

    result = CliRunner().invoke(app, ["methods"])
    assert result.exit_code == 0, result.output
    for name in ("ircot", "ircot-noreader", "iter-retgen"):
        assert f"\n{name}" in result.output or f" {name} " in result.output or name in result.output.split()
