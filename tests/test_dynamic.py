"""The one decoding loop with every method, on the real SmolLM2-135M and BM25 over a fixture corpus."""
from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import torch

from dynaprag.dynamic.methods import METHODS
from dynaprag.inject import INJECTORS, Injection, Injector
from dynaprag.pipeline import Pipeline, PipelineConfig

PASSAGES = [
    ("jaws", "Jaws (film)", "Jaws is a 1975 American thriller film directed by Steven Spielberg."),
    ("spielberg", "Steven Spielberg", "Steven Spielberg (born December 18, 1946) is an American film director born in Cincinnati, Ohio."),
    ("cincinnati", "Cincinnati", "Cincinnati is a city in the U.S. state of Ohio on the Ohio River."),
    ("nolan", "Christopher Nolan", "Christopher Nolan (born 30 July 1970) is a British film director born in London."),
    ("inception", "Inception", "Inception is a 2010 science fiction film directed by Christopher Nolan."),
    ("curie", "Marie Curie", "Marie Curie was a physicist and chemist born in Warsaw, the capital of Poland."),
    ("warsaw", "Warsaw", "Warsaw is the capital and largest city of Poland, on the Vistula river."),
    ("paris", "Paris", "Paris is the capital of France; the Seine flows through it."),
]
QUESTION = "In what year was the director of Jaws born?"


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    from dynaprag.retrieval import RetrieverConfig, build_retriever

    folder = tmp_path_factory.mktemp("corpus")
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "title": t, "text": x}) + "\n" for i, t, x in PASSAGES))
    return build_retriever(RetrieverConfig(corpus=str(corpus), index_dir=str(folder / "index")), progress=False)


@pytest.fixture(scope="module")
def pipe(lm, retriever):
    return Pipeline.from_config(PipelineConfig(max_new_tokens=16, max_retrievals=2), lm=lm, retriever=retriever)


#: Every in-context preset that runs on an instruct model (the parametric ones need an adapter store or a
#: trained translator: tests/test_parametric_*.py; self-rag needs reflection tokens; adaptive-rag* a trained
#: classifier: tests/test_adaptive_rag_real.py).
RUNNABLE = [m for m in METHODS.names() if m != "self-rag" and METHODS.get(m).injector == "in-context"
            and not m.startswith("adaptive-rag")]


@pytest.mark.slow
@pytest.mark.parametrize("method", RUNNABLE)
def test_every_method_answers_with_a_trace(pipe, method):
    options = ({f"{axis}.{knob}": value for axis in ("trigger", "selector")  # bound CPU time in tests
                for knob, value in (("samples", 4), ("sample_tokens", 6))} if method == "seakr" else None)
    answer = pipe.answer(QUESTION, method=method, options=options)
    tr = answer.trace
    assert answer.text.strip()
    assert tr.method == method
    assert tr.generated_tokens >= len(tr.tokens) > 0
    assert tr.forward_passes > 0 and tr.prompt_tokens > 0 and tr.seconds > 0
    assert len(tr.retrievals) <= 2
    for ev in tr.retrievals:
        assert ev.query.strip() and ev.reason  # hits may be none when no query word is in the corpus
        assert all(h in dict((p[0], p) for p in PASSAGES) for h in ev.hit_ids)
    if method == "wo-rag":
        assert not tr.retrievals
    if method in ("sr-rag", "fl-rag", "fs-rag"):
        assert tr.retrievals[0].position == 0 and tr.retrievals[0].query == QUESTION
    json.dumps(answer.to_dict())


def test_self_rag_needs_reflection_tokens(pipe):
    with pytest.raises(ValueError, match="self-rag-prompted"):
        pipe.answer(QUESTION, method="self-rag")


@pytest.mark.slow
def test_dragin_truncates_at_trigger_and_queries_by_attention(pipe):
    events = []
    answer = pipe.answer(QUESTION, method="dragin", options={"theta": 0.0}, on_event=events.append)
    tr = answer.trace
    assert tr.retrievals, "theta=0 must fire on the first content token with attention from a later one"
    first = tr.retrievals[0]
    assert "RIND" in first.reason and first.scores
    kinds = [e["type"] for e in events]
    assert "retrieval" in kinds and "token" in kinds
    rollbacks = [e for e in events if e["type"] == "rollback"]
    assert rollbacks and rollbacks[0]["keep_tokens"] == first.position
    words = first.query.split()
    assert 0 < len(words) <= 35
    assert any(w.strip("?.,").lower() in QUESTION.lower() for w in words)
    assert tr.generated_tokens > len(tr.tokens)  # discarded draft tokens were counted
    repeats = [(a.position, a.query) for a, b in zip(tr.retrievals, tr.retrievals[1:])
               if (a.position, a.query) == (b.position, b.query)]
    assert not repeats, "an identical retrieval at the same cut must be skipped, not re-run"


@pytest.mark.slow
def test_flare_retrieves_first_then_never_with_an_empty_query(pipe):
    answer = pipe.answer(QUESTION, method="flare", options={"theta": 1.0, "beta": 1.0})
    first = answer.trace.retrievals[0]
    assert first.position == 0 and first.query == QUESTION and "before the first look-ahead" in first.reason
    # theta = 1 fires on every sentence, beta = 1 masks every token: FLARE's query is empty, so no retrieval
    assert len(answer.trace.retrievals) == 1
    assert any("query came out empty" in note for note in answer.trace.notes)


@pytest.mark.slow
def test_flare_masks_low_probability_tokens_of_the_sentence(pipe):
    answer = pipe.answer(QUESTION, method="flare", options={"theta": 1.0, "beta": 0.3})
    later = answer.trace.retrievals[1:]
    assert later and all("p ≤ 1" in ev.reason and ev.query and ev.query != QUESTION for ev in later)


@pytest.mark.slow
def test_prefix_is_computed_once_and_never_re_encoded(lm, retriever):
    pipe = Pipeline.from_config(PipelineConfig(max_new_tokens=12, max_retrievals=3), lm=lm, retriever=retriever)
    plen = len(pipe.builder().prefix_ids)
    pipe.prefix()
    seen = []

    def hook(_module, args, kwargs):
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen.append((cache.get_seq_length() if cache is not None else 0, ids.shape[-1]))

    handle = lm.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        a1 = pipe.answer(QUESTION, method="fs-rag")
        a2 = pipe.answer("Marie Curie was born in the capital of which country?", method="sr-rag")
    finally:
        handle.remove()
    assert pipe.prefix_computations == 1
    assert len(a1.trace.retrievals) >= 2  # before generating, then after a sentence
    assert seen and all(past >= plen - 1 for past, _ in seen), "a forward pass re-encoded the static prefix"


class _ScaledHead(Injector):
    """A real weight change for the test: scales the output head while active, restores it after."""

    name = "test-scaled-head"

    def bind(self, generator) -> None:
        self.model = generator.model

    def inject(self, passages, question, *, use=None) -> Injection:
        @contextmanager
        def scaled():
            head = self.model.get_output_embeddings().weight
            original = head.detach().clone()
            with torch.no_grad():
                head.mul_(1.01)
            try:
                yield
            finally:
                with torch.no_grad():
                    head.copy_(original)
        return Injection(context=list(passages), weights=scaled(), kind="parametric")


if "test-scaled-head" not in INJECTORS:
    INJECTORS.register("test-scaled-head", _ScaledHead)


@pytest.mark.slow
def test_weight_changing_injection_re_prefills_under_the_weights(lm, retriever):
    pipe = Pipeline.from_config(PipelineConfig(max_new_tokens=8, injector="test-scaled-head", method="sr-rag"),
                                lm=lm, retriever=retriever)
    before = lm.model.get_output_embeddings().weight.detach().clone()
    seen = []
    handle = lm.model.register_forward_pre_hook(
        lambda _m, a, kw: seen.append(kw.get("past_key_values", kw.get("cache")).get_seq_length()), with_kwargs=True)
    try:
        answer = pipe.answer(QUESTION)
    finally:
        handle.remove()
    assert answer.trace.retrievals[0].injection == "parametric"
    assert 0 in seen[1:], "the prompt (prefix included) must be re-prefilled from scratch under new weights"
    assert torch.equal(lm.model.get_output_embeddings().weight, before), "weights restored after the answer"
