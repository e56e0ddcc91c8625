"""The white-box generator on the real default model: signals, caches, stops, determinism."""
import math

import pytest
import torch

from dynaprag.lm import GenerationConfig
from dynaprag.lm.signals import ATTENTION, HiddenState
from dynaprag.lm.prompts import PromptBuilder

pytestmark = pytest.mark.slow
QUESTION = "Which river flows through Paris?"


@pytest.fixture(scope="module")
def builder(lm):
    return PromptBuilder(lm.tokenizer, chat=lm.chat_template)


def full_logprobs(lm, ids):
    with torch.inference_mode():
        logits = lm.model(torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits, -1)


def test_logprobs_and_entropy_match_a_full_forward(lm, generator, builder):
    prompt = builder.build(QUESTION)
    state = generator.start(prompt)
    gen = generator.generate(state, GenerationConfig(max_new_tokens=12, top_alternatives=3))
    assert len(gen.steps) > 3
    reference = full_logprobs(lm, state.ids)
    total = 0.0
    for step in gen.steps:
        row = reference[step.position - 1]
        assert math.isclose(step.logprob, float(row[step.token_id]), abs_tol=1e-3)
        hand_entropy = float(-(row.exp() * row).sum())
        assert math.isclose(step.entropy, hand_entropy, abs_tol=1e-3)
        assert step.top_ids[0] == step.token_id  # greedy picks the most probable token
        total += step.logprob
    sequence_lp = sum(float(reference[s.position - 1][s.token_id]) for s in gen.steps)
    assert math.isclose(total, sequence_lp, abs_tol=1e-2)


def test_attention_rows_present_exactly_when_requested(generator, builder):
    prompt = builder.build(QUESTION)
    plain = generator.generate(generator.start(prompt), GenerationConfig(max_new_tokens=4))
    assert all("attention" not in s.signals for s in plain.steps)
    state = generator.start(prompt)
    with_attn = generator.generate(state, GenerationConfig(max_new_tokens=4, signals=(ATTENTION,)))
    for step in with_attn.steps:
        row = step.signals["attention"]
        assert row.shape == (step.position,)
        assert math.isclose(float(row.sum()), 1.0, abs_tol=1e-4)
        assert float(row.min()) >= 0.0
    assert plain.token_ids == with_attn.token_ids  # eager last layer decodes the same tokens


def test_hidden_states_of_chosen_layers(lm, generator, builder):
    state = generator.start(builder.build(QUESTION))
    gen = generator.generate(state, GenerationConfig(max_new_tokens=2, signals=(HiddenState(0), HiddenState(15))))
    hidden = gen.steps[0].signals
    assert set(hidden) == {"hidden:0", "hidden:15"}
    assert hidden["hidden:15"].shape == (lm.model.config.hidden_size,)


def test_prefix_cache_matches_full_prefill(lm, generator, builder):
    prefix = generator.prefix(builder.prefix_ids)
    prompt = builder.build(QUESTION)
    cached = generator.start(prompt, prefix=prefix)
    assert cached.fed == len(builder.prefix_ids)
    step_cached = generator.step(cached, GenerationConfig(top_alternatives=20))
    fresh = generator.start(prompt)
    step_fresh = generator.step(fresh, GenerationConfig(top_alternatives=20))
    assert step_cached.token_id == step_fresh.token_id
    assert step_cached.top_ids == step_fresh.top_ids
    assert torch.allclose(torch.tensor(step_cached.top_logprobs), torch.tensor(step_fresh.top_logprobs),
                          atol=1e-4)
    assert math.isclose(step_cached.logprob, step_fresh.logprob, abs_tol=1e-4)
    assert math.isclose(step_cached.entropy, step_fresh.entropy, abs_tol=1e-4)
    # only the part after the prefix was prefilled, and the prefix itself is untouched for reuse
    assert cached.counters.prompt_tokens == len(prompt) - len(builder.prefix_ids)
    assert fresh.counters.prompt_tokens == len(prompt)
    again = generator.start(builder.build("Who wrote Hamlet?"), prefix=prefix)
    assert again.fed == len(builder.prefix_ids)


def test_truncate_then_continue_equals_fresh_decoding(generator, builder):
    prompt = builder.build(QUESTION)
    state = generator.start(prompt)
    first = generator.generate(state, GenerationConfig(max_new_tokens=8))
    generator.truncate(state, len(prompt) + 3)
    resumed = generator.generate(state, GenerationConfig(max_new_tokens=5))
    assert resumed.token_ids == first.token_ids[3:8]


def test_stop_strings_cut_the_text(generator, builder):
    state = generator.start(builder.build(QUESTION))
    gen = generator.generate(state, GenerationConfig(max_new_tokens=40, stop=(".",)))
    assert gen.stopped_by == "stop:."
    assert "." not in gen.text


def test_sampling_is_deterministic_under_a_seed(generator, builder):
    prompt = builder.build(QUESTION)
    cfg = GenerationConfig(max_new_tokens=10, do_sample=True, temperature=1.2, seed=7)
    a = generator.generate(generator.start(prompt), cfg).token_ids
    b = generator.generate(generator.start(prompt), cfg).token_ids
    c = generator.generate(generator.start(prompt), GenerationConfig(
        max_new_tokens=10, do_sample=True, temperature=1.2, seed=8)).token_ids
    assert a == b
    assert a != c
