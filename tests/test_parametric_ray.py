"""`dynaprag encode --ray`: augmentation + encoding on the test run's local Ray cluster into the same store.

That a call which starts its own cluster also stops it is in ``test_ray_cluster.py``.
"""
from __future__ import annotations

import os

import pytest

from dynaprag.corpus import Passage
from dynaprag.parametric.adapters import AdapterStore
from dynaprag.parametric.augment import AugmentConfig
from dynaprag.parametric.encode import EncodeConfig

pytestmark = pytest.mark.slow


def test_ray_encodes_documents_into_the_store(lm, tmp_path, ray_cluster):
    from dynaprag.parametric.distributed import RayConfig, encode_with_ray

    config = EncodeConfig(failed_augmentation="plain-text", augment=AugmentConfig(
        prompts="lenient", greedy_first=True, max_new_tokens_rewrite=16, max_new_tokens_qa=48, max_retries=0))
    passages = [Passage("r1", "Vellum Bay", "Vellum Bay is a bay in Norway named in 1790 by Ole Berg."),
                Passage("r2", "Tarn Hollow", "Tarn Hollow is a village in Wales with 412 inhabitants.")]
    store = AdapterStore(tmp_path / "adapters", lm.fingerprint, config.store_config())
    store.put(passages[1].content_hash, {"x.lora_A": __import__("torch").zeros(1, 1)}, {"doc": {"id": "r2"}})
    seen = []
    report = encode_with_ray("smollm2-135m", "float32", lm.fingerprint, passages, store, config,
                             RayConfig(workers=2), lambda p, s: seen.append((p.id, s)))
    assert ray_cluster.is_initialized()  # the test run's cluster: not this call's to stop
    assert report.skipped == 1 and report.encoded == 1  # the finished document is not redone
    assert sorted(seen) == [("r1", "encoded"), ("r2", "already stored")]
    entry = store.entries()[passages[0].content_hash]
    assert entry["worker_pid"] != os.getpid() and entry["doc"]["id"] == "r1"
    assert entry["worker_niceness"] == os.nice(0)  # not Ray's default nice 15: the actors are the job
    adapter = store.get(passages[0].content_hash)
    assert len(adapter) == lm.model.config.num_hidden_layers * 6 and store.verify() == []
