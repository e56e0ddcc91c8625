"""One answer extraction for every method (dynaprag.lm.extraction), on the real default model."""
from __future__ import annotations

import pytest

from dynaprag.lm.extraction import FORCE_TOKENS, cut_answer, force_answer, has_marker
from dynaprag.lm.prompts import ANSWER_MARKER, PromptBuilder, PromptConfig, extract_answer


def test_cut_and_marker_rules():
    assert cut_answer(" Paris is big. Question: Who? So the answer is X.") == " Paris is big. "
    assert cut_answer("Question: kept when it is the very start") == "Question: kept when it is the very start"
    assert has_marker(" It is in France. So the answer is Paris.")
    assert has_marker(" The answer is Paris.")  # the same pattern extract_answer reads
    assert not has_marker(" Paris is in France.")
    assert not has_marker(" Paris. Note: so the answer is Lyon.")  # after the cut


def test_marked_answer_is_read_without_generating():
    forced = force_answer(None, None, "Where?", " It is in France. So the answer is Paris.\nQuestion: next")
    assert not forced.forced and forced.short == "Paris" and forced.generated_tokens == 0 and forced.seconds == 0


@pytest.mark.slow
def test_unmarked_answer_gets_a_forced_continuation(lm, generator):
    builder = PromptBuilder(lm.tokenizer, lm.chat_template, PromptConfig(shots=1))
    question = "What is the capital of France?"
    text = " France is a country in Europe. Its capital is a large city on the Seine"
    forced = force_answer(generator, builder, question, text, prefix=generator.prefix(builder.prefix_ids))
    assert forced.forced and forced.raw_short == extract_answer(text)
    assert forced.text == f"{text.rstrip()} {ANSWER_MARKER}{forced.continuation}"
    assert forced.short == extract_answer(forced.text) and "\n" not in forced.continuation
    assert 0 < forced.generated_tokens <= FORCE_TOKENS and forced.forward_passes >= forced.generated_tokens
    assert forced.prompt_tokens > 0 and forced.seconds > 0
    # the same prompt token by token: the exemplar prompt, no passages, the answer + marker
    ids = builder.build(question, (), generator.encode(f"{text.rstrip()} {ANSWER_MARKER}"))
    again = force_answer(generator, builder, question, text)  # no prefix cache: same greedy tokens
    assert again.continuation == forced.continuation and again.prompt_tokens == len(ids)
