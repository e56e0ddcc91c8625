"""The Pipeline API other components code against: config, per-call method/options, events, CLI."""
from __future__ import annotations

import json

import pytest

from dynaprag.config import ConfigError, apply_overrides
from dynaprag.dynamic.methods import METHODS
from dynaprag.pipeline import Pipeline, PipelineConfig

QUESTION = "Who directed the film Inception?"


def test_config_overrides_are_typed_and_checked():
    cfg = apply_overrides(PipelineConfig(), ["k=2", "method=flare", "options.theta=0.5", "retrieval.k1=0.9",
                                             "prompt.shots=1", "trigger=rind"])
    assert (cfg.k, cfg.method, cfg.options, cfg.retrieval.k1, cfg.prompt.shots, cfg.trigger) == \
        (2, "flare", {"theta": 0.5}, 0.9, 1, {"name": "rind"})
    cfg = apply_overrides(PipelineConfig(), ["trigger.theta=0.8", "formulator.n=25", "selector=seakr-uncertainty"])
    assert (cfg.trigger, cfg.formulator, cfg.selector) == ({"theta": 0.8}, {"n": 25}, {"name": "seakr-uncertainty"})
    with pytest.raises(ConfigError, match="k: must be >= 1"):
        apply_overrides(PipelineConfig(), ["k=-3"])
    with pytest.raises(ConfigError, match="max_new_token"):
        apply_overrides(PipelineConfig(), ["max_new_token=3"])


def test_methods_registry_lists_the_paper_methods():
    for name in ("wo-rag", "sr-rag", "fl-rag", "fs-rag", "token-rag", "entity-rag", "flare", "flare-flashrag",
                 "dragin", "dragin-paper", "dragin-inline", "seakr", "self-rag", "self-rag-prompted", "prag", "dyprag"):
        assert name in METHODS


def test_a_typo_fails_before_any_model_loads():
    with pytest.raises(ConfigError, match="thetta"):
        Pipeline.from_config(PipelineConfig(model="no-such-model-would-fail-to-load", trigger={"thetta": 1}))


@pytest.fixture(scope="module")
def pipe(lm):
    from dynaprag.retrieval import RetrieverConfig, build_retriever

    retriever = build_retriever(RetrieverConfig(), progress=False)  # the packaged demo corpus
    return Pipeline.from_config(PipelineConfig(method="wo-rag", max_new_tokens=12), lm=lm, retriever=retriever)


@pytest.mark.slow
def test_answer_with_per_call_method_and_events(pipe):
    events = []
    answer = pipe.answer(QUESTION, method="sr-rag", on_event=events.append)
    assert answer.trace.method == "sr-rag" and len(answer.trace.retrievals) == 1
    ev = answer.trace.retrievals[0]
    assert ev.query == QUESTION and "inception" in ev.hit_ids and len(ev.hit_ids) == 3
    retrieval_events = [e for e in events if e["type"] == "retrieval"]
    assert retrieval_events and retrieval_events[0]["hit_ids"] == ev.hit_ids
    tokens = [e for e in events if e["type"] == "token"]
    assert "".join(e["text"] for e in tokens).strip().startswith(answer.text[:5])
    assert {"text", "logprob", "entropy", "score"} <= set(tokens[0])
    json.dumps(answer.to_dict())
    plain = pipe.answer(QUESTION)  # back to the configured method, same loaded model and prefix
    assert plain.trace.method == "wo-rag" and not plain.trace.retrievals
    assert pipe.prefix_computations == 1


@pytest.mark.slow
def test_per_call_options_override_knobs(pipe):
    fired = pipe.answer(QUESTION, method="flare", options={"trigger.theta": 1.0, "trigger.initial": False})
    assert fired.trace.retrievals and "p ≤ 1" in fired.trace.retrievals[0].reason
    with pytest.raises(ConfigError):
        pipe.answer(QUESTION, method="flare", options={"nope": 1})


@pytest.mark.slow
def test_the_method_is_built_once_per_pipeline_and_the_loop_budgets_come_from_the_config(lm):
    """Questions reuse the resolved, checked and bound method (a per-call variant is built once
    too); every budget of the loop is a PipelineConfig field, ``max_decoded_factor`` included."""
    import dataclasses

    from dynaprag.config import to_dict
    from dynaprag.dynamic.loop import LoopConfig
    from dynaprag.pipeline import resolve_config
    from dynaprag.testing import InMemoryRetriever
    from dynaprag.testing.loop import DEFAULT_PASSAGES

    assert {f.name for f in dataclasses.fields(LoopConfig)} <= {f.name for f in dataclasses.fields(PipelineConfig)}
    cfg = apply_overrides(PipelineConfig(method="sr-rag", max_new_tokens=6), ["max_decoded_factor=2.5"])
    assert to_dict(resolve_config(cfg))["max_decoded_factor"] == 2.5  # what a run's config.json records
    pipe = Pipeline.from_config(cfg, lm=lm, retriever=InMemoryRetriever(DEFAULT_PASSAGES))
    first, second = pipe.answer(QUESTION), pipe.answer("Who wrote Hamlet?")
    assert first.trace.method == second.trace.method == "sr-rag" and pipe.method_resolutions == 1
    configured = pipe.method()
    assert configured is pipe.method(None, {}) is pipe.method("sr-rag")
    pipe.answer(QUESTION, options={"selector.k": 1})
    pipe.answer(QUESTION, options={"selector.k": 1})
    assert pipe.method_resolutions == 2
    pipe.config = dataclasses.replace(pipe.config, dataset="2wikimultihopqa")  # as bench/dynamic.py switches
    assert pipe.method() is not configured and pipe.method_resolutions == 3
    assert pipe.loop().config == LoopConfig(k=3, max_new_tokens=6, max_retrievals=5, max_decoded_factor=2.5, seed=0)
    assert pipe.loop(max_new_tokens=9).config.max_new_tokens == 9
    with pytest.raises(ConfigError, match="max_decoded_factor"):
        apply_overrides(PipelineConfig(), ["max_decoded_factor=0.5"])


@pytest.mark.slow
def test_cli_ask_prints_answer_and_trace():
    from typer.testing import CliRunner

    from dynaprag.cli import app

    result = CliRunner().invoke(app, ["ask", QUESTION, "--method", "sr-rag", "--model", "smollm2-135m",
                                      "dtype=float32", "max_new_tokens=8"])
    assert result.exit_code == 0, result.output
    assert "retrieval 1" in result.output and "query" in result.output and "forward passes" in result.output
    bad = CliRunner().invoke(app, ["ask", QUESTION, "--method", "nope"])
    assert bad.exit_code != 0 and "unknown method" in bad.output
