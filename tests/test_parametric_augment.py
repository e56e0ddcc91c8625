"""Augmentation output parsing (well-formed and malformed model outputs, PRAG §3.2.1) and batched
generation on the real default model."""
from __future__ import annotations

import pytest

from dynaprag.corpus import Passage
from dynaprag.parametric.augment import (AugmentConfig, Augmentation, parse_prag_qa, parse_qa_pairs,
                                         parse_rewrite, usable_first)

PASSAGE = ("Zorblat Lake is a freshwater lake in northern Finland, discovered in 1873 by the explorer "
           "Anna Virtanen. It covers 42 square kilometres.")


def test_qa_pairs_plain_format():
    text = "Q: Who discovered Zorblat Lake?\nA: Anna Virtanen\nQ: When was it discovered?\nA: 1873.\n"
    assert parse_qa_pairs(text) == [("Who discovered Zorblat Lake?", "Anna Virtanen"),
                                     ("When was it discovered?", "1873")]


def test_qa_pairs_numbered_bold_and_inline_variants():
    text = ("Here are the questions:\n"
            "1. **Question 1:** Where is Zorblat Lake?\n   **Answer 1:** Northern Finland\n"
            "- Question 2: How large is the lake? Answer: 42 square kilometres\n"
            "3) Q3. Who found it?\n3) A3. Anna Virtanen\n")
    assert parse_qa_pairs(text) == [("Where is Zorblat Lake?", "Northern Finland"),
                                    ("How large is the lake?", "42 square kilometres"),
                                    ("Who found it?", "Anna Virtanen")]


def test_qa_pairs_json_list():
    text = 'Sure!\n[{"question": "Who discovered the lake?", "answer": "Anna Virtanen"}, {"question": "x"}]'
    assert parse_qa_pairs(text) == [("Who discovered the lake?", "Anna Virtanen")]


def test_qa_pairs_malformed_outputs_yield_nothing_usable():
    assert parse_qa_pairs("") == []
    assert parse_qa_pairs("The lake is in Finland. It is big.") == []
    assert parse_qa_pairs("Q: What is the answer to the question: What is the answer to") == []  # no answer
    assert parse_qa_pairs("A: Anna Virtanen\nA: 1873") == []  # answers without questions
    long_answer = "A: " + " ".join(["word"] * 40)
    assert parse_qa_pairs("Q: Who found it?\n" + long_answer) == []  # rambling, not an answer
    assert parse_qa_pairs("[not json at all") == []


def test_qa_pairs_deduplicates_questions():
    text = "Q: Who found it?\nA: Anna\nQ: who found it?\nA: Anna Virtanen\n"
    assert parse_qa_pairs(text) == [("Who found it?", "Anna")]


def test_rewrite_strips_lead_in_and_quotes():
    out = ('Here is the rewritten passage:\n\n"Discovered in 1873 by Anna Virtanen, Zorblat Lake is a '
           'freshwater lake of 42 square kilometres in the north of Finland."')
    assert parse_rewrite(out, PASSAGE).startswith("Discovered in 1873 by Anna Virtanen")


def test_rewrite_rejects_copies_truncations_and_repetition():
    assert parse_rewrite(PASSAGE, PASSAGE) is None
    assert parse_rewrite("Zorblat Lake.", PASSAGE) is None
    assert parse_rewrite("", PASSAGE) is None
    assert parse_rewrite("Zorblat Lake: " * 12, PASSAGE) is None
    assert parse_rewrite("lake " * 200, PASSAGE) is None


@pytest.mark.slow
def test_batched_greedy_generation_matches_one_at_a_time(lm):
    """Left-padded batching (documents augment together) must not change greedy outputs."""
    from dynaprag.parametric.augment import QA_PROMPT, REWRITE_PROMPT, AugmentConfig, Augmenter

    passage = "Title: Zorblat Lake\nZorblat Lake is a lake in Finland found in 1873 by Anna Virtanen."
    texts = [REWRITE_PROMPT.format(passage=passage), QA_PROMPT.format(n=3, passage=passage + " It is deep.")]
    budgets = [12, 20]
    augmenter = Augmenter(lm, AugmentConfig(greedy_first=True))
    alone = [augmenter.complete_many([t], [b], -1)[0] for t, b in zip(texts, budgets)]
    assert augmenter.complete_many(texts, budgets, -1) == alone
    assert all(alone)


def test_prag_qa_list_as_the_reference_accepts_it():
    ok = ('Sure! [{"question": "Who found it?", "answer": ["Anna", "Virtanen"], "full_answer": "Anna found it."},'
          ' {"question": "When?", "answer": 1873, "full_answer": "In 1873."},'
          ' {"question": "Where?", "answer": null, "full_answer": "In Finland."},'
          ' {"question": "Extra?", "answer": "x", "full_answer": "x."}]')
    assert parse_prag_qa(ok) == [
        {"question": "Who found it?", "answer": "Anna, Virtanen", "full_answer": "Anna found it."},
        {"question": "When?", "answer": "1873", "full_answer": "In 1873."},
        {"question": "Where?", "answer": "Unknown", "full_answer": "In Finland."}]
    truncated = '[{"question": "a?", "answer": "b", "full_answer": "b."}, {"question": "c?", "answer": "d", ' \
                '"full_answer": "d."}, {"question": "e?", "answer": "f", "full_answer": "f."},'
    assert parse_prag_qa(truncated) is not None  # a missing closing bracket is added
    assert parse_prag_qa(ok.replace(', "full_answer": "In 1873."', "")) is None  # every item needs all three
    assert parse_prag_qa('[{"question": "a?", "answer": "b", "full_answer": "b."}]') is None  # fewer than three
    assert parse_prag_qa("Q: Who found it?\nA: Anna") is None


class _ScriptedAugmenter:
    """Stands in for the LLM in this unit test of the selection rule only: passages whose text
    contains "bad" never yield a QA list."""

    config = AugmentConfig()

    def __init__(self):
        self.calls = []

    def augment_many(self, passages):
        self.calls.append([p.id for p in passages])
        return [Augmentation(passage={"id": p.id, "title": p.title, "text": p.text},
                             qa=[] if "bad" in p.text else [{"question": "q?", "answer": "a"}],
                             failures=["qa attempt 1"] if "bad" in p.text else []) for p in passages]


def test_usable_first_skips_unaugmentable_passages_and_takes_the_next():
    ranked = [Passage(f"p{i}", "", ("bad " if i in (1, 2) else "good ") + str(i)) for i in range(8)]
    augmenter = _ScriptedAugmenter()
    kept, skipped = usable_first(augmenter, ranked, 3)
    assert [a.passage["id"] for a in kept] == ["p0", "p3", "p4"]
    assert [a.passage["id"] for a in skipped] == ["p1", "p2"]
    assert augmenter.calls == [["p0", "p1", "p2"], ["p3", "p4"]]  # no passage augmented beyond need
