"""Model-issued search: the protocols' text rules, the turn trigger, the inline prompt, the presets.

(a) the pure protocol rules on strings (tags, malformed and unclosed tags, cleanup, blocks,
answers); the trigger and the query on hand-built drafts (turn ends, the turn limit, the token
budget, end of turn); (b) the protocol prompt on the real SmolLM2 tokenizer, a composition with a
weight-changing injector on the scripted loop, and the checkpoint the ``search-r1`` preset needs.
The whole loop against the reference's own is ``tests/comparison/test_search_r1_loop.py``.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import pytest

from dynaprag.corpus import Passage
from dynaprag.dynamic.component import CapabilityError
from dynaprag.dynamic.draft import Decision, Draft
from dynaprag.dynamic.methods import METHODS, resolve_method
from dynaprag.dynamic.methods.search_r1.builder import ProtocolPromptBuilder, TurnPassage, observations
from dynaprag.dynamic.methods.search_r1.components import ModelSearchTrigger, TagQuery
from dynaprag.dynamic.methods.search_r1.protocol import (
    ANSWER, INVALID, PROTOCOLS, SEARCH, Action, cut_response, final_answer, format_documents, normalise_question,
    observation, parse_action, turn_end,
)
from dynaprag.inject import Injection, Injector
from dynaprag.lm.decoding import StepOutput
from dynaprag.testing import ScriptedStep, scripted_loop

SR1, R1S, RES = (PROTOCOLS.get(n) for n in ("search-r1", "r1-searcher", "research"))
DOCS = [Passage("jaws", "Jaws (film)", "Jaws is a 1975 film directed by Steven Spielberg."),
        Passage("spielberg", "Steven Spielberg", "Spielberg was born in 1946.")]


# -- (a) protocol rules -------------------------------------------------------------------------
def test_a_turn_ends_at_its_first_closing_tag():
    assert turn_end(SR1, "<think> x </think>\n<search> q") is None  # unclosed: the turn goes on
    assert turn_end(SR1, "<search> q </search> more") == SEARCH
    assert turn_end(SR1, "<answer> a </answer> then <search> q </search>") == ANSWER
    assert turn_end(RES, "<answer> a </answer>") is None  # ReSearch ends its answer at end of turn
    assert turn_end(R1S, "<|begin_of_query|> q <|end_of_query|>") == SEARCH


def test_the_turn_is_kept_up_to_its_closing_tag():
    assert cut_response(SR1, "<search> q </search>\n\nDoc") == "<search> q </search>"
    assert cut_response(SR1, "  no tag at all  ") == "  no tag at all  "
    assert cut_response(R1S, "  <|begin_of_query|> q <|end_of_query|>") == "<|begin_of_query|> q<|end_of_query|>"


@pytest.mark.parametrize("response, action", [
    ("<think> t </think>\n<search>  Jaws director \n</search>", Action(SEARCH, "Jaws director")),
    ("<search> a <search> b </search>", Action(SEARCH, "a <search> b")),  # Search-R1's regex: the first tag
    ("<answer> 1946 </answer>", Action(ANSWER, "1946")),
    ("Jaws director </search>", Action(INVALID, "")),  # closing tag without its opening tag
    ("<search> never closed", Action(INVALID, "")),
    ("", Action(INVALID, "")),
    ("1946 </answer>", Action(INVALID, "")),
])
def test_search_r1_actions(response, action):
    assert parse_action(SR1, response) == action


def test_other_protocols_read_the_last_tag_and_clean_the_query():
    assert parse_action(RES, "<search> a <search> b </search>") == Action(SEARCH, "b")
    r1 = cut_response(R1S, "<|begin_of_query|> \"Jaws\"\tdirector... <|end_of_query|>")
    assert parse_action(R1S, r1) == Action(SEARCH, "Jaws director")


def test_blocks_are_the_references_formats():
    assert observation(SR1, Action(SEARCH, "q"), DOCS) == (
        "\n\n<information>Doc 1(Title: Jaws (film)) Jaws is a 1975 film directed by Steven Spielberg.\n"
        "Doc 2(Title: Steven Spielberg) Spielberg was born in 1946.</information>\n\n")
    assert observation(SR1, Action(INVALID, ""), []).startswith("\nMy previous action is invalid.")
    assert observation(SR1, Action(ANSWER, "x"), DOCS) == ""
    assert format_documents(R1S, []) == "None"
    assert observation(R1S, Action(SEARCH, "q"), DOCS[:1]) == (
        "\n\n<|begin_of_documents|>\n(1)Title: Jaws (film) Text: Jaws is a 1975 film directed by Steven "
        "Spielberg.\n<|end_of_documents|>\n\n")
    assert observation(RES, Action(SEARCH, "q"), DOCS[:1]) == (
        " <result>\nJaws (film)\nJaws is a 1975 film directed by Steven Spielberg.\n</result>")
    assert observation(R1S, Action(INVALID, ""), []) == ""  # R1-Searcher has no retry message


def test_answers_and_questions():
    assert final_answer(SR1, "<answer> a </answer> x <answer> b\n</answer>") == "b"
    assert final_answer(SR1, "<answer> never closed") is None
    assert final_answer(R1S, "<answer> Ulm ") == " Ulm "
    boxed = "<answer> The final answer is \\[ \\boxed{Ulm, {Germany}} \\] </answer>"
    assert final_answer(RES, boxed) == "Ulm, {Germany}"
    assert final_answer(RES, "<answer> Ulm </answer>") == ""
    assert normalise_question(SR1, " Who directed Jaws ") == "Who directed Jaws?"
    assert normalise_question(R1S, "Who directed Jaws") == "Who directed Jaws"


# -- (a) the trigger and the query on drafts ----------------------------------------------------------
def draft_of(text_pieces, retrievals=0, at=0, passages=()):
    draft = Draft(question="Who directed Jaws?")
    for i, piece in enumerate(text_pieces):
        draft.append(StepOutput(position=i, token_id=i + 10, text=piece, logprob=-0.1, entropy=0.5), piece)
    draft.retrievals, draft.last_retrieval_at, draft.passages = retrievals, at, list(passages)
    return draft


def test_the_trigger_fires_at_the_closing_search_tag_and_keeps_everything():
    trigger = ModelSearchTrigger()
    assert trigger(draft_of(["<search>", " Jaws"])) is None
    draft = draft_of(["<think>", " x", " </think>", "\n<search>", " Jaws", " director", " </search>"])
    decision = trigger(draft)
    assert decision.retrieve and decision.keep == 7 and decision.observation == Action(SEARCH, "Jaws director")
    assert TagQuery()(draft, decision) == "Jaws director"
    assert TagQuery()(draft, Decision.fire("another trigger", keep=0)) == draft.question
    assert not trigger.finished(draft)


def test_the_answer_tag_ends_the_question_and_integrates():
    draft = draft_of(["<search>", " q", " </search>", "<answer>", " 1946", " </answer>"], retrievals=1, at=3,
                     passages=[TurnPassage("jaws", "J", "t", at=3)])
    trigger = ModelSearchTrigger()
    assert not trigger(draft).retrieve and trigger.finished(draft)
    final = trigger.integrate(draft)
    assert final.short == "1946" and final.text == "<search> q </search><answer> 1946 </answer>"


def test_the_turn_limit_leaves_a_final_turn_without_results():
    trigger = ModelSearchTrigger(max_turns=2)
    draft = draft_of(["a", "<search>", " q", " </search>"], retrievals=2, at=1)
    decision = trigger(draft)
    assert not decision.retrieve and "final turn" in decision.notes[0] and trigger.finished(draft)
    assert trigger.integrate(draft).short == ""  # no answer tag: the reference scores it wrong


def test_a_turn_without_an_action_gets_the_retry_message_or_ends():
    eos = StepOutput(position=9, token_id=0, text="", logprob=0.0, entropy=0.0)
    draft = draft_of(["I", " think", " Paris"])
    assert ModelSearchTrigger()(draft) is None
    draft.ended, draft.end_step = True, eos
    decision = ModelSearchTrigger()(draft)
    assert decision.retrieve and decision.observation == Action(INVALID, "") and TagQuery()(draft, decision) == ""
    assert not ModelSearchTrigger(protocol="r1-searcher")(draft).retrieve  # R1-Searcher stops there
    over = draft_of(["w"] * 5)
    assert ModelSearchTrigger(turn_tokens=5)(over).retrieve and ModelSearchTrigger(turn_tokens=6)(over) is None
    bad = draft_of(["Jaws", " </search>"])
    assert ModelSearchTrigger()(bad).observation == Action(INVALID, "")


def test_unknown_protocol_is_refused_with_the_choices():
    from dynaprag.config import ConfigError

    with pytest.raises(ConfigError, match="search-r1"):
        resolve_method("search-r1-prompted", {"trigger": {"protocol": "search-r2"}})


# -- (b) the protocol prompt on the real tokenizer -------------------------------------------------
def test_observations_go_after_their_turns(lm):
    tok = lm.tokenizer
    builder = ProtocolPromptBuilder(tok, True, SR1)
    question = "Who directed Jaws"
    prompt = tok.apply_chat_template([{"role": "user", "content": SR1.prompt.format(question=question + "?")}],
                                     tokenize=False, add_generation_prompt=True)
    enc = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    turn1, turn2 = enc("<think> x </think>\n<search> Jaws director </search>"), enc("\nI do not know")
    slot = [TurnPassage(p.id, p.title, p.text, at=len(turn1), kind=SEARCH, query="Jaws director") for p in DOCS]
    ids = builder.build(question, slot, turn1 + turn2)
    assert ids == enc(prompt) + turn1 + enc(observation(SR1, Action(SEARCH, "q"), DOCS)) + turn2
    assert ids[: len(builder.prefix_ids)] == builder.prefix_ids and len(builder.prefix_ids) > 100
    assert builder.question_ids(question) == enc(prompt)[len(builder.prefix_ids):]
    capped = ProtocolPromptBuilder(tok, True, dataclasses.replace(SR1, observation_tokens=4))
    assert capped.build(question, slot, turn1) == enc(prompt) + turn1 + enc(observation(SR1, Action(SEARCH, "q"),
                                                                                        DOCS))[:4]
    assert [o.at for o in observations([DOCS[0], *slot])] == [0, len(turn1)]  # plain passages: before turn 1
    demo = ProtocolPromptBuilder(tok, True, SR1, demonstrate=True)
    assert "Kapuskasing" in demo.prompt_text(question) and demo.prompt_text(question).count("<|im_start|>user") == 2


# -- (b) composition and presets ----------------------------------------------------------------------
class WeightsDouble(Injector):
    """A weight-changing injection (the PRAG/DyPRAG shape) that counts its applications."""

    name = "weights-double"

    def __init__(self, context: bool = True):
        self.entered = self.exited = 0
        self.context = context

    def inject(self, passages, question, *, use=None) -> Injection:
        @contextmanager
        def applied():
            self.entered += 1
            try:
                yield
            finally:
                self.exited += 1
        return Injection(context=list(passages)[:use] if self.context else (), weights=applied(), kind="parametric",
                         used=list(passages)[:use])


@pytest.mark.parametrize("injector", ["information-block", "weights", "weights-only"])
def test_model_search_composes_with_another_injector(injector):
    """The turn protocol under PRAG's shape of injector: weights and context, or weights alone
    (then the slot keeps no passages and the turns are told apart by the last retrieval)."""
    script = [ScriptedStep(p) for p in ("<search>", " Jaws", " director", " </search>", " <answer>", " 1946",
                                        " </answer>", " tail")]
    double = None if injector == "information-block" else WeightsDouble(context=injector == "weights")
    loop = scripted_loop("search-r1-prompted", script, injector=double)
    answer = loop.run("Who directed Jaws?")
    (event,) = answer.trace.retrievals
    assert event.query == "Jaws director" and event.position == 4 and event.hit_ids
    assert answer.short == "1946" and "tail" not in answer.text
    if double is not None:
        assert double.entered == double.exited == 1 and event.injection == "parametric"


def test_the_answer_tag_is_scored_as_given(lm):
    """The one extraction keeps the protocol's answer: forcing "So the answer is" onto a text whose
    answer is in a tag would score a continuation of the real model instead of the tag."""
    from dynaprag.pipeline import Pipeline, PipelineConfig

    script = [ScriptedStep(p) for p in (" <answer>", " 1946", " </answer>")]
    answer = scripted_loop("search-r1-prompted", script).run("Who directed Jaws?")
    pipe = Pipeline(PipelineConfig(method="search-r1-prompted"), lm, retriever=None)
    scored = pipe.extract("Who directed Jaws?", answer)
    assert scored.short == "1946" and scored.trace.extraction["by_protocol"]
    assert not scored.trace.extraction["forced"] and scored.trace.generated_tokens == answer.trace.generated_tokens


def test_the_family_is_listed_with_its_variants():
    for name in ("search-r1", "search-r1-prompted", "r1-searcher", "research"):
        assert METHODS.get(name).trigger == "model-search"
    assert "variant" in METHODS.get("search-r1-prompted").paper


def test_search_r1_needs_its_checkpoint(lm):
    """On another model the preset fails at once, in one line, before any question; the prompted
    variant runs the protocol on it."""
    from dynaprag.pipeline import Pipeline, PipelineConfig

    pipe = Pipeline(PipelineConfig(method="search-r1"), lm, retriever=None)
    with pytest.raises(CapabilityError) as err:
        pipe.method()
    assert "PeterJinGo/SearchR1" in str(err.value) and "\n" not in str(err.value)
    assert "search-r1-prompted" in str(err.value)
    pipe.method("search-r1-prompted")


def test_an_absent_checkpoint_fails_in_one_line_without_downloading():
    from dynaprag.dynamic.methods.search_r1 import SEARCH_R1_CHECKPOINT
    from dynaprag.lm import load_model
    from dynaprag.lm.models import ModelError

    with pytest.raises(ModelError) as err:
        load_model(SEARCH_R1_CHECKPOINT)  # HF_HUB_OFFLINE=1 (tests/conftest.py): nothing is fetched
    assert SEARCH_R1_CHECKPOINT in str(err.value) and "\n" not in str(err.value)
