"""PRAG's "take the next retrieved passage": top-k + 10 candidates, the first k usable ones used.

A real :class:`AdapterStore` in a temporary folder holds the candidates' state: some entries
recorded as skipped (augmentation never parsed, :meth:`AdapterStore.skip`), some with adapters
(shape-correct LoRA tensors for the real 135M model, each tagged by a constant so the combined
LoRA shows which documents it holds and in which order), some never encoded. The PRAG
injector must walk them in order, use the first ``use`` usable ones, record the skipped ones,
and neither encode nor use the candidates after them; the loop must retrieve k + 10, record
the used passages as the event's hits and the passed-over ones as ``skipped_ids``.
"""
from __future__ import annotations

import json

import pytest
import torch

from dynaprag.corpus import Passage
from dynaprag.parametric.adapters import AdapterStore
from dynaprag.parametric.augment import AugmentConfig
from dynaprag.parametric.encode import EncodeConfig
from dynaprag.parametric.lora import target_modules

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # one_thread: conftest

DOCS = [Passage(f"c{i}", f"Candidate {i}", f"Candidate {i} is a passage about the lighthouse of Port Wren, "
                                            f"fact number {i}.") for i in range(7)]


def tagged_adapter(lm, config: EncodeConfig, tag: float) -> dict[str, torch.Tensor]:
    """A LoRA on every target projection of the model whose A and B entries all equal ``tag``."""
    out = {}
    for name, module in target_modules(lm.model, config.targets).items():
        out[f"{name}.lora_A"] = torch.full((config.rank, module.in_features), tag)
        out[f"{name}.lora_B"] = torch.full((module.out_features, config.rank), tag)
    return out


def fill_store(root, lm, config: EncodeConfig, adapters=(), skipped=()) -> AdapterStore:
    """``adapters``: indices of DOCS given a tagged adapter (tag = (i + 1) / 1000); ``skipped``: recorded as skipped."""
    store = AdapterStore(root, lm.fingerprint, config.store_config())
    for i in adapters:
        store.put(DOCS[i].content_hash, tagged_adapter(lm, config, (i + 1) / 1000), {"doc": {"id": DOCS[i].id}})
    for i in skipped:
        store.skip(DOCS[i].content_hash, {"doc": {"id": DOCS[i].id}})
    return store


def adapter_order(injection, config: EncodeConfig) -> list[str]:
    """The documents whose adapters the combined LoRA holds, in order (read back from the tags)."""
    _a, b = next(iter(injection.weights.combined.values()))
    tags = [float(b[0, j]) for j in range(0, b.shape[1], config.rank)]
    return [f"c{round(t * 1000) - 1}" for t in tags]


def ids(passages) -> list[str]:
    return [p.id for p in passages]


def test_prag_uses_the_first_usable_candidates_in_order(lm, generator, tmp_path):
    from dynaprag.inject.parametric import PragCombineInjector, PragInjector

    config = EncodeConfig()
    root = tmp_path / "adapters"
    store = fill_store(root, lm, config, adapters=(0, 2, 4, 5, 6), skipped=(1, 3))
    injector = PragInjector(store=str(root), on_missing="context", encode=config)
    injector.bind(generator)
    injection = injector.inject(DOCS, "Where is the lighthouse?", use=3)
    assert ids(injection.used) == ["c0", "c2", "c4"] and ids(injection.skipped) == ["c1", "c3"]
    assert injection.kind == "parametric" and not list(injection.context)
    assert adapter_order(injection, config) == ["c0", "c2", "c4"] and injection.weights.rank == 3 * config.rank
    assert [n.split(":")[0] for n in injection.notes if "skipped" in n] == ["doc c1", "doc c3"]
    assert injection.used_of(DOCS, 3) == list(injection.used)

    combine = PragCombineInjector(store=str(root), on_missing="context", encode=config)
    combine.bind(generator)
    combined = combine.inject(DOCS, "Where is the lighthouse?", use=3)
    assert ids(combined.context) == ["c0", "c2", "c4"] and combined.kind == "combined"  # not c1/c3, not c5/c6

    everything = injector.inject(DOCS, "q")  # use=None: every usable candidate, as before
    assert ids(everything.used) == ["c0", "c2", "c4", "c5", "c6"] and ids(everything.skipped) == ["c1", "c3"]

    short = injector.inject(DOCS[:4], "q", use=3)  # too few usable candidates: fewer documents, said so
    assert ids(short.used) == ["c0", "c2"] and any("2 of 3 passages usable among 4 candidates" in n
                                                   for n in short.notes)
    assert store.verify() == []


def test_missing_adapter_in_context_counts_as_used(lm, generator, tmp_path):
    from dynaprag.inject.parametric import PragInjector

    config = EncodeConfig()
    root = tmp_path / "adapters"
    fill_store(root, lm, config, adapters=(2, 3), skipped=(0,))  # c1 never encoded
    injector = PragInjector(store=str(root), on_missing="context", encode=config)
    injector.bind(generator)
    injection = injector.inject(DOCS, "q", use=2)
    assert ids(injection.used) == ["c1", "c2"] and ids(injection.skipped) == ["c0"]
    assert ids(injection.context) == ["c1"] and injection.kind == "combined"
    assert adapter_order(injection, config) == ["c2"]


def test_spare_candidates_are_encoded_only_when_a_skip_needs_them(lm, generator, tmp_path):
    """on_missing="encode": round 1 takes the first ``use`` candidates (c0 skipped, c1 ready), round 2
    exactly one more (c2, encoded by the real encoder); c3 and later are never encoded."""
    from dynaprag.inject.parametric import PragInjector

    config = EncodeConfig(with_cot=False, failed_augmentation="plain-text", augment=AugmentConfig(
        prompts="lenient", greedy_first=True, rewrites=0, qa_pairs=1, max_new_tokens_rewrite=8,
        max_new_tokens_qa=24, max_retries=0))
    root = tmp_path / "adapters"
    fill_store(root, lm, config, adapters=(1,), skipped=(0,))
    injector = PragInjector(store=str(root), on_missing="encode", encode=config)
    injector.bind(generator)
    injection = injector.inject(DOCS, "q", use=2)
    assert ids(injection.used) == ["c1", "c2"] and ids(injection.skipped) == ["c0"]
    assert injection.kind == "parametric" and injection.weights.rank == 2 * config.rank
    assert [n.split(":")[0] for n in injection.notes if "encoded on demand" in n] == ["doc c2"]
    entries = AdapterStore(root, lm.fingerprint, config.store_config()).entries()
    assert set(entries) == {DOCS[i].content_hash for i in (0, 1, 2)}  # c3..c6: not encoded
    assert entries[DOCS[2].content_hash]["augment_batch"] == 1


def test_loop_retrieves_spares_and_records_used_and_skipped(lm, tmp_path, monkeypatch):
    """A PRAG pipeline whose top-1 candidate is recorded as skipped still answers with k passages:
    the event's hits are the k used ones, the skipped one is in ``skipped_ids``."""
    from dynaprag.pipeline import Pipeline, PipelineConfig
    from dynaprag.retrieval import RetrieverConfig, build_retriever

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": p.id, "title": p.title, "text": p.text}) + "\n" for p in DOCS))
    retrieval = RetrieverConfig(corpus=str(corpus), index_dir=str(tmp_path / "index"))
    retriever = build_retriever(retrieval, progress=False)
    question = "Where is the lighthouse of Port Wren?"
    ranked = [h.passage for h in retriever.search_one(question, 3 + 10)]
    assert len(ranked) == len(DOCS)
    config = EncodeConfig()
    root = tmp_path / "adapters"
    fill_store(root, lm, config, adapters=[DOCS.index(ranked[1])], skipped=[DOCS.index(ranked[0])])
    monkeypatch.setenv("DYNAPRAG_ADAPTERS", str(root))
    cfg = PipelineConfig(model="smollm2-135m", dtype="float32", k=2, max_new_tokens=3, max_retrievals=1,
                         retrieval=retrieval, method="prag", options={"on_missing": "context"})
    pipe = Pipeline.from_config(cfg, lm=lm, retriever=retriever)
    (event,) = pipe.answer(question).trace.retrievals
    assert event.hit_ids == ids(ranked[1:3]) and len(event.hit_ids) == 2
    assert event.hit_titles == [p.title for p in ranked[1:3]] and event.skipped_ids == [ranked[0].id]
    assert event.injection == "combined"  # ranked[1] by its adapter, ranked[2] (never encoded) in context

    baseline = pipe.answer(question, method="sr-rag")  # no extra candidates: plain top-k, nothing skipped
    (plain,) = baseline.trace.retrievals
    assert plain.hit_ids == ids(ranked[:2]) and plain.skipped_ids == []


def test_old_traces_without_skipped_ids_still_load():
    from dynaprag.trace import RetrievalEvent, Trace

    old = {"method": "prag", "retrievals": [{"position": 0, "reason": "once", "query": "q", "hit_ids": ["a"],
                                             "hit_titles": ["A"], "hit_texts": ["x"], "scores": {},
                                             "injection": "parametric", "seconds": 0.1}]}
    trace = Trace.from_dict(old)
    assert trace.retrievals[0].skipped_ids == []
    again = Trace(retrievals=[RetrievalEvent(0, "once", "q", ["a"], skipped_ids=["b"])])
    assert Trace.from_dict(json.loads(json.dumps(again.to_dict()))) == again
