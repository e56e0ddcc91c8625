"""DRAGIN's token signals as the presets read them: through our decoder, not the test's own passes.

``test_dragin.py`` computes the logits and the attention pass inside the test; what ``DraginTrigger``
reads instead is :class:`~dynaprag.lm.Generator`'s greedy steps (``StepOutput.entropy``, the
decoder's log-softmax) and :meth:`Generator.attention_of` over the look-ahead. Here both run on the
reference run's prompt (``dragin.json``: ``generate_attn`` on SmolLM2-135M, float32, eager): the
greedy continuation must be the reference's token for token, its entropies the reference's
``-Σ p log(p + 1e-10)`` in nats (``generate.py:135-141``), and the attention the reference's per-token
``max`` over query rows then head mean (``generate.py:94-97``). The greedy check also runs on
the fast decoder (``Generator(decoder="fast")``) for one question.
"""
from __future__ import annotations

import pytest
import torch

from dynaprag.dynamic.methods.dragin import rind
from dynaprag.lm.generator import GenerationConfig, Generator

from .parity import assert_close, params

QUESTIONS = params("dragin.json", lambda d: d["questions"], lambda q: f"{q['dataset']}-{q['id'][:8]}")
#: one question per dataset for the (slower) token-by-token decode
FIRST_PER_DATASET = params("dragin.json", lambda d: [q for i, q in enumerate(d["questions"])
                                                     if q["dataset"] not in {p["dataset"] for p in d["questions"][:i]}],
                           lambda q: f"{q['dataset']}-{q['id'][:8]}")


@pytest.fixture(scope="module")
def generator(eager_lm):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fixture was produced
    yield Generator(eager_lm)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fast_generator(eager_lm):
    """The same model on the fast decoder (:mod:`dynaprag.lm.fast`: static cache, hand-written pass), float32, uncompiled."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Generator(eager_lm, decoder="fast")
    torch.set_num_threads(threads)


@pytest.mark.parametrize("q", FIRST_PER_DATASET)
def test_greedy_steps_carry_the_reference_tokens_and_entropies(q, generator):
    check_greedy_steps(q, generator)


@pytest.mark.parametrize("q", FIRST_PER_DATASET[-1:])
def test_fast_decoder_steps_carry_the_reference_tokens_and_entropies(q, fast_generator):
    """The same check on the fast decoder, for one question (the shorter continuation)."""
    check_greedy_steps(q, fast_generator)
    assert fast_generator.path == "fast-eager-float32" and not fast_generator.fallbacks


def check_greedy_steps(q, generator) -> None:
    state = generator.start(q["prompt_ids"])
    config = GenerationConfig(max_new_tokens=1, stop_at_eos=False)
    steps = [generator.step(state, config) for _ in q["continuation_ids"]]
    assert [s.token_id for s in steps] == q["continuation_ids"]
    # the decoder's log-softmax entropy against numpy's softmax with +1e-10 (deviation (d) in dragin.py):
    # equal to a few 1e-5 absolute; an entropy in bits would be 1.44 times larger
    got, want = [s.entropy for s in steps], q["token_entropies"]
    bad = [(i, a, e) for i, (a, e) in enumerate(zip(got, want)) if abs(a - e) > 1e-3 * abs(e) + 1e-4]
    assert not bad, f"entropies differ from the reference's (index, ours, reference): {bad[:5]}"


@pytest.mark.parametrize("q", QUESTIONS)
def test_look_ahead_attention_pass_is_the_references(q, generator):
    heads = generator.attention_of(q["continuation_ids"])
    assert_close(rind.attention_received(heads).tolist(), q["token_attn_max_mean"], rel=1e-3,
                 what="max-then-mean attention")
