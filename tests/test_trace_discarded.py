"""A retrieval's trace keeps what it cut away: the discarded draft or look-ahead, each token with
the trigger score that made it fire, and the span of the sentence that fired."""
from __future__ import annotations

import pytest

from dynaprag.trace import Trace

QUESTION = "In what year was the director of Jaws born?"


@pytest.fixture(scope="module")
def pipe(lm):
    from dynaprag.pipeline import Pipeline, PipelineConfig

    return Pipeline.from_config(PipelineConfig(dtype="float32", max_new_tokens=40), lm=lm)


@pytest.mark.parametrize("method", ["dragin", "flare"])
def test_a_retrieval_that_cut_the_draft_keeps_the_scored_discarded_tokens(pipe, method):
    trace = pipe.answer(QUESTION, method=method).trace
    cuts = [r for r in trace.retrievals if r.discarded]
    assert cuts, f"{method} fired on a draft on the demo question"
    for r in cuts:
        start, end = r.fired
        assert 0 <= start < end <= len(r.discarded)
        fired_text = "".join(t.text for t in r.discarded[start:end])
        assert fired_text.strip() and "<|" not in fired_text
        scored = [t.score for t in r.discarded[start:end] if t.score is not None]
        assert scored, "the firing sentence carries the scores that made the trigger fire"
    for r in trace.retrievals:  # what a user reads is decoded text, never vocabulary pieces
        for text in [r.query, *r.scores]:
            assert not any(piece in text for piece in ("<|", "Ċ", "Ġ")), text
    # what the trace serialises is what loads back
    again = Trace.from_dict(trace.to_dict())
    assert [r.discarded for r in again.retrievals] == [r.discarded for r in trace.retrievals]
    assert [r.fired for r in again.retrievals] == [r.fired for r in trace.retrievals]


def test_traces_written_before_discarded_tokens_load():
    old = {"method": "dragin", "retrievals": [{"position": 0, "reason": "r", "query": "q", "hit_ids": ["a"]}],
           "tokens": [{"text": "x", "logprob": -0.1, "entropy": 0.2}]}
    trace = Trace.from_dict(old)
    assert trace.retrievals[0].discarded == [] and trace.retrievals[0].fired == []


def test_the_demo_prints_decoded_words_in_its_scores_line():
    from typer.testing import CliRunner

    from dynaprag.cli import app

    result = CliRunner().invoke(app, ["demo", "dtype=float32", "max_new_tokens=40"])
    assert result.exit_code == 0, result.output
    scores = [line for line in result.output.splitlines() if line.strip().startswith("scores:")]
    assert scores, result.output
    for line in scores + [line for line in result.output.splitlines() if line.strip().startswith("query:")]:
        assert not any(piece in line for piece in ("<|", "Ċ", "Ġ")), line
