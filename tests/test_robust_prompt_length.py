"""Issue 15, item 7: a prompt longer than the model's context is refused before the model runs.

A 20,000-word question once ran 400 s at 2.7 GB with no output. Every prompt passes through
:meth:`Generator.start` or :meth:`Generator.extend`, so the check there covers ``ask``, ``eval``
and the server alike; these tests use the real default model and count its forward passes.
"""
from __future__ import annotations

import pytest

from dynaprag.lm import GenerationConfig, PromptTooLong
from dynaprag.lm.generator import context_length
from dynaprag.lm.sampling import StepSampling
from dynaprag.lm.prompts import PromptBuilder

pytestmark = pytest.mark.slow
LONG_QUESTION = " ".join(f"word{i % 97}" for i in range(10_000)) + " Which river flows through Paris?"


@pytest.fixture(scope="module")
def builder(lm):
    return PromptBuilder(lm.tokenizer, chat=lm.chat_template)


@pytest.fixture
def forward_calls(lm):
    """Counts forward passes of the real model (a hook, not a stand-in)."""
    calls = []
    handle = lm.model.register_forward_pre_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()


def test_context_length_comes_from_the_model_config(lm, generator):
    assert context_length(lm.model.config) == lm.model.config.max_position_embeddings == 8192
    assert generator.context_length == 8192


def test_ten_thousand_word_question_fails_before_the_model_runs(generator, builder, forward_calls):
    prompt = builder.build(LONG_QUESTION)
    assert len(prompt) > generator.context_length
    with pytest.raises(PromptTooLong) as info:
        generator.start(prompt)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert f"{len(prompt)} tokens" in message and "8192" in message
    assert "shorter question" in message and "k" in message and "shots" in message
    assert forward_calls == []


def test_pipeline_answer_refuses_the_long_question(lm, forward_calls):
    from dynaprag.pipeline import Pipeline, PipelineConfig
    from dynaprag.retrieval import RetrieverConfig

    pipeline = Pipeline.from_config(PipelineConfig(method="wo-rag", retrieval=RetrieverConfig()), lm=lm)
    calls_before = len(forward_calls)  # the few-shot prefix may be prefilled; the question never is
    with pytest.raises(PromptTooLong, match="tokens"):
        pipeline.answer(LONG_QUESTION)
    assert len(forward_calls) - calls_before <= 1


def test_extend_past_the_context_is_refused_and_leaves_the_state_alone(generator, builder):
    state = generator.start(builder.build("Which river flows through Paris?"))
    before = list(state.ids)
    with pytest.raises(PromptTooLong, match="passages"):
        generator.extend(state, [42] * generator.context_length)
    assert state.ids == before and len(state.generated) == len(before)


def test_decoding_stops_at_the_end_of_the_context(generator, builder, monkeypatch):
    prompt = builder.build("Which river flows through Paris?")
    monkeypatch.setattr(generator, "context_length", len(prompt) + 3)
    state = generator.start(prompt)
    gen = generator.generate(state, GenerationConfig(max_new_tokens=20, stop_at_eos=False))
    assert gen.stopped_by == "context" and len(gen.steps) == 4
    with pytest.raises(PromptTooLong):
        generator.step(state, GenerationConfig())  # one more token would run past the context
    sampled = generator.sample_steps(generator.start(prompt), 2, StepSampling(max_tokens=20, seed=1))
    assert all(1 <= len(s.steps) <= 3 for s in sampled.samples)  # each sample ends with room for its end token
