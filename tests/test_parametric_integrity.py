"""A damaged adapter never stops a run (issue 15 item 2): real adapters written by the real
encoder in a temporary store, then 16 bytes flipped in one of them.

`encode` must redo the damaged document instead of reporting it "already in store"; the PRAG
injector must re-encode it or fall back to context (its ``on_missing``) and say so in the
answer's trace notes; ``ask``'s path (the pipeline) must answer instead of crashing.
"""
from __future__ import annotations

import json

import pytest

from dynaprag.corpus import Passage
from dynaprag.parametric.adapters import AdapterIntegrityError, AdapterStore
from dynaprag.parametric.augment import AugmentConfig
from dynaprag.parametric.encode import EncodeConfig, encode_corpus

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # one_thread: conftest

DOCS = [Passage("v1", "Vellum Bay", "Vellum Bay is a bay in Norway named in 1790 by Ole Berg."),
        Passage("v2", "Tarn Hollow", "Tarn Hollow is a village in Wales with 412 inhabitants.")]


def _config() -> EncodeConfig:
    return EncodeConfig(failed_augmentation="plain-text", augment=AugmentConfig(
        prompts="lenient", greedy_first=True, max_new_tokens_rewrite=16, max_new_tokens_qa=48, max_retries=0))


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, lm):
    """(store root, pristine bytes of v1's adapter): both documents encoded by the real encoder."""
    root = tmp_path_factory.mktemp("integrity") / "adapters"
    store = AdapterStore(root, lm.fingerprint, _config().store_config())
    report = encode_corpus(lm, DOCS, store, _config())
    assert report.encoded == 2
    return root, store.path(DOCS[0].content_hash).read_bytes()


def _damage(root, lm, pristine: bytes) -> AdapterStore:
    """A fresh store object (no in-memory cache) over v1's adapter with 16 bytes flipped."""
    store = AdapterStore(root, lm.fingerprint, _config().store_config())
    data = bytearray(pristine)
    middle = len(data) // 2
    for i in range(middle, middle + 16):
        data[i] ^= 0xA5
    store.path(DOCS[0].content_hash).write_bytes(bytes(data))
    return store


def test_encode_redoes_a_damaged_adapter(encoded, lm):
    root, pristine = encoded
    store = _damage(root, lm, pristine)
    assert not store.has(DOCS[0].content_hash) and store.has(DOCS[1].content_hash)
    with pytest.raises(AdapterIntegrityError) as err:
        store.get(DOCS[0].content_hash)
    assert str(store.path(DOCS[0].content_hash)) in str(err.value) and "manifest.json" in str(err.value)
    seen = []
    report = encode_corpus(lm, DOCS, store, _config(), lambda p, s: seen.append((p.id, s)))
    assert (report.encoded, report.skipped, report.repaired) == (1, 1, 1)
    assert ("v1", "encoded") in seen and ("v2", "already stored") in seen
    assert store.verify() == [] and len(store.get(DOCS[0].content_hash)) == lm.model.config.num_hidden_layers * 6


def test_prag_falls_back_to_context_for_a_damaged_adapter(encoded, lm, generator):
    from dynaprag.inject.parametric import PragInjector

    root, pristine = encoded
    _damage(root, lm, pristine)
    injector = PragInjector(store=str(root), on_missing="context", encode=_config())
    injector.bind(generator)
    injector._store().forget(DOCS[0].content_hash)  # the process-wide store may hold the good copy
    injection = injector.inject(DOCS, "Who named Vellum Bay?")
    assert injection.kind == "combined" and list(injection.context) == [DOCS[0]]
    assert injection.weights.rank == 2  # v2's adapter only
    note = next(n for n in injection.notes if n.startswith("doc v1"))
    assert "damaged" in note and "in-context" in note and DOCS[0].content_hash in note


def test_prag_reencodes_a_damaged_adapter_on_demand(encoded, lm, generator):
    from dynaprag.inject.parametric import PragInjector

    root, pristine = encoded
    _damage(root, lm, pristine)
    injector = PragInjector(store=str(root), on_missing="encode", encode=_config())
    injector.bind(generator)
    injector._store().forget(DOCS[0].content_hash)
    injection = injector.inject(DOCS, "Who named Vellum Bay?")
    assert injection.kind == "parametric" and injection.weights.rank == 4
    note = next(n for n in injection.notes if n.startswith("doc v1"))
    assert "damaged" in note and "re-encoded" in note
    assert AdapterStore(root, lm.fingerprint, _config().store_config()).verify() == []


def test_pipeline_answers_with_a_damaged_adapter(encoded, lm, tmp_path, monkeypatch):
    """What `dynaprag ask --method prag` runs: an answer with the fallback in its trace, no traceback."""
    from dynaprag.pipeline import Pipeline, PipelineConfig
    from dynaprag.retrieval import RetrieverConfig, build_retriever

    root, pristine = encoded
    _damage(root, lm, pristine)
    monkeypatch.setenv("DYNAPRAG_ADAPTERS", str(root))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": p.id, "title": p.title, "text": p.text}) + "\n" for p in DOCS))
    retrieval = RetrieverConfig(corpus=str(corpus), index_dir=str(tmp_path / "index"))
    cfg = PipelineConfig(model="smollm2-135m", dtype="float32", k=2, max_new_tokens=4, max_retrievals=1,
                         retrieval=retrieval, method="prag",
                         options={"on_missing": "context",
                                  "encode": {"failed_augmentation": "plain-text", "augment": {"prompts": "lenient"}}})
    pipe = Pipeline.from_config(cfg, lm=lm, retriever=build_retriever(retrieval, progress=False))
    from dynaprag.parametric.stores import default_store_root, open_store

    open_store(default_store_root(), lm, _config()).forget(DOCS[0].content_hash)
    answer = pipe.answer("Who named Vellum Bay?")
    (event,) = answer.trace.retrievals
    assert "v1" in event.hit_ids and event.injection in ("in-context", "combined")  # v1 went into the prompt
    assert any("doc v1" in n and "damaged" in n for n in answer.trace.notes)


def test_unaugmentable_passage_is_skipped_and_recorded(lm, generator, tmp_path):
    """PRAG skips a passage whose QA generation never parses (it does not train on plain text):
    the store records the skip with its failures, encode does not redo it, PRAG leaves it out."""
    from dynaprag.inject.parametric import PragInjector

    config = EncodeConfig(augment=AugmentConfig(prompts="lenient", greedy_first=True, max_new_tokens_rewrite=16,
                                                max_new_tokens_qa=48, max_retries=0))
    store = AdapterStore(tmp_path / "adapters", lm.fingerprint, config.store_config())
    report = encode_corpus(lm, DOCS, store, config)
    assert report.unaugmentable + report.encoded == 2 and report.unaugmentable >= 1  # v1: no QA pair (greedy)
    skipped = [p for p in DOCS if store.status(p.content_hash) == "skipped"]
    entry = store.entries()[skipped[0].content_hash]
    assert entry["augmentation"]["failures"] and not store.path(skipped[0].content_hash).exists()
    assert store.verify() == []
    again = encode_corpus(lm, DOCS, store, config)
    assert (again.encoded, again.skipped, again.unaugmentable) == (0, 2, report.unaugmentable)
    injector = PragInjector(store=str(tmp_path / "adapters"), on_missing="context", encode=config, with_context=True)
    injector.bind(generator)
    injection = injector.inject(DOCS, "Who named Vellum Bay?")
    assert skipped[0] not in list(injection.context)
    assert any(n.startswith(f"doc {skipped[0].id}: skipped") for n in injection.notes)
