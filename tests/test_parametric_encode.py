"""PRAG encoding on the real default model, resume after a kill, DyPRAG translator and inference,
and parametric injectors inside the pipeline (including DRAGIN's trigger with DyPRAG's injector).

One module fixture encodes three short fixture documents (tiny augmentation budgets: the test
checks the mechanics, not quality) and another trains a DyPRAG translator on that store; each
test asks for the fixtures it needs, so any one of them runs alone.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dynaprag.corpus import Passage
from dynaprag.parametric.adapters import AdapterStore
from dynaprag.parametric.augment import AugmentConfig
from dynaprag.parametric.encode import DocumentEncoder, EncodeConfig

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # one_thread: conftest

DOCS = [
    {"id": "z1", "title": "Zorblat Lake", "text": "Zorblat Lake is a lake in Finland found in 1873 by Anna Virtanen."},
    {"id": "z2", "title": "Qwerty Pike", "text": "Qwerty Pike is a mountain in Chile first climbed in 1921 by Luis Mora."},
    {"id": "z3", "title": "Plumbo River", "text": "The Plumbo River flows through Peru and is 310 kilometres long."},
]
OVERRIDES = ["failed_augmentation=plain-text", "augment.prompts=lenient", "augment.greedy_first=true",
             "augment.max_new_tokens_rewrite=20",
             "augment.max_new_tokens_qa=48", "augment.max_retries=0"]
ROOT = Path(__file__).resolve().parents[1]


def _config() -> EncodeConfig:
    return EncodeConfig(failed_augmentation="plain-text", augment=AugmentConfig(
        prompts="lenient", greedy_first=True, max_new_tokens_rewrite=20, max_new_tokens_qa=48, max_retries=0))


def _passages() -> list[Passage]:
    return [Passage(d["id"], d["title"], d["text"]) for d in DOCS]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, lm):
    """Start `dynaprag encode` in a subprocess, SIGKILL it after its first finished document,
    then resume in-process: returns (store root, corpus file, finished before kill, report)."""
    from dynaprag.cli.parametric import run_encode

    root = tmp_path_factory.mktemp("parametric")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    store_root = root / "adapters"
    cmd = [sys.executable, "-m", "dynaprag.cli", "encode", "--corpus", str(corpus), "--store", str(store_root)]
    for item in OVERRIDES:
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store = AdapterStore(store_root, lm.fingerprint, _config().store_config())
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and len(store) < 1:
        time.sleep(0.2)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(store)
    assert finished >= 1, proc.stderr.read().decode()[-2000:]
    _, report = run_encode(str(corpus), [], None, str(store_root), "smollm2-135m", "float32", False, 0,
                           OVERRIDES, show_progress=False)
    return store_root, corpus, finished, report


def test_encode_resumes_after_kill(encoded, lm):
    store_root, _, finished, report = encoded
    store = AdapterStore(store_root, lm.fingerprint, _config().store_config())
    assert report.skipped == finished and report.encoded == len(DOCS) - finished
    assert len(store) == len(DOCS) and store.verify() == []
    assert not list(store.files.glob(".*.dynaprag-*"))  # no temp file of a writer left behind


def test_adapters_are_real_lora_from_shared_init(encoded, lm):
    store_root = encoded[0]
    store = AdapterStore(store_root, lm.fingerprint, _config().store_config())
    with DocumentEncoder(lm, _config()) as enc:
        init = enc.initial_adapter()
    with DocumentEncoder(lm, _config()) as enc:
        assert all(torch.equal(v, enc.initial_adapter()[k]) for k, v in init.items())  # fixed shared init
    layers = lm.model.config.num_hidden_layers
    adapters = [store.get(p.content_hash) for p in _passages()]
    for adapter in adapters:
        assert len(adapter) == layers * 3 * 2
        key = "model.layers.0.mlp.gate_proj"
        assert adapter[f"{key}.lora_A"].shape == (2, lm.model.config.hidden_size)
        assert float(adapter[f"{key}.lora_B"].abs().max()) > 0  # B starts at zero: it was trained
        drift = max(float((adapter[k] - init[k]).abs().max()) for k in init if k.endswith("lora_A"))
        assert 0 < drift < 0.05  # a few small AdamW steps away from the shared init
    assert not torch.equal(adapters[0]["model.layers.5.mlp.up_proj.lora_B"],
                           adapters[1]["model.layers.5.mlp.up_proj.lora_B"])
    for entry in store.entries().values():
        assert entry["train"]["steps"] >= 1 and entry["augmentation"]["attempts"] >= 2
        assert entry["model_dtype"] == str(lm.dtype).removeprefix("torch.")  # how it was made
        assert len(entry["augmentation"]["failures"]) + len(entry["augmentation"]["qa"]) >= 1
    # all model parameters are intact and trainable again after peft was unloaded
    assert not any("lora" in name for name, _ in lm.model.named_parameters())


@pytest.fixture(scope="module")
def translator(encoded, lm, tmp_path_factory):
    """A DyPRAG translator trained on the encoded store: (saved file, net, loss curve, its config)."""
    from dynaprag.parametric.translator import (TranslatorConfig, pairs_from_store, train_translator,
                                                translator_metadata)

    cfg = _config()
    store = AdapterStore(encoded[0], lm.fingerprint, cfg.store_config())
    pairs = pairs_from_store(lm, store, cfg)
    with DocumentEncoder(lm, cfg) as enc:
        init = enc.initial_adapter()
    tcfg = TranslatorConfig(learning_rate=1e-3, epochs=3, max_tokens=48, sample_tokens=48, kl_reduction="sum")
    net, curve = train_translator(lm, pairs, cfg.scaling, cfg.targets, cfg.rank, tcfg, init_adapter=init)
    path = tmp_path_factory.mktemp("translator") / "translator.safetensors"
    net.save(path, translator_metadata(lm, tcfg, cfg.scaling, cfg.targets))
    return path, net, curve, len(pairs)


def test_translator_training_lowers_the_loss(translator, lm):
    from dynaprag.parametric.translator import ParameterTranslator

    path, net, curve, pairs = translator
    assert len(curve) == 3 * pairs
    assert {"lm_loss", "kl_loss", "mse_loss", "total_loss"} <= set(curve[0])
    first = sum(r["total_loss"] for r in curve[:pairs]) / pairs
    last = sum(r["total_loss"] for r in curve[-pairs:]) / pairs
    assert last < first
    loaded, meta = ParameterTranslator.load(path)
    emb = torch.randn(lm.model.config.hidden_size)
    with torch.no_grad():
        assert all(torch.equal(v, loaded(emb)[k]) for k, v in net(emb).items())
    assert meta["model_fingerprint"] == lm.fingerprint


def test_translator_train_command_writes_the_translator_and_drops_its_state(encoded, lm, tmp_path):
    from dynaprag.cli.parametric import run_translator_train
    from dynaprag.parametric.translator import ParameterTranslator

    out = tmp_path / "translator"
    summary = run_translator_train(str(encoded[0]), str(out), "smollm2-135m", "float32",
                                   ["max_tokens=48", "sample_tokens=48", "kl_reduction=sum"], show_progress=False)
    assert summary["steps"] == summary["pairs"] == len(summary["curve"]) >= 1
    assert summary["seconds"] == summary["curve"][-1]["seconds"] > 0
    assert not (out / "training-state.safetensors").exists()  # kept only while the training is unfinished
    _, meta = ParameterTranslator.load(out / "translator.safetensors")
    assert meta["model_fingerprint"] == lm.fingerprint
    assert json.loads((out / "loss_curve.json").read_text())["steps"] == summary["steps"]



def _pipeline(lm, corpus, tmp_path, max_new_tokens=6, **kw):
    from dynaprag.pipeline import Pipeline, PipelineConfig
    from dynaprag.retrieval import RetrieverConfig, build_retriever

    retrieval = RetrieverConfig(corpus=str(corpus), index_dir=str(tmp_path / "index"))
    cfg = PipelineConfig(model="smollm2-135m", dtype="float32", k=2, max_new_tokens=max_new_tokens, max_retrievals=1,
                         retrieval=retrieval, **kw)
    return Pipeline.from_config(cfg, lm=lm, retriever=build_retriever(retrieval, progress=False))


def test_dyprag_injector_generates_adapters_on_the_fly(translator, lm, generator):
    from dynaprag.inject.parametric import DyPragCombineInjector, DyPragInjector

    injector = DyPragInjector(translator=str(translator[0]))
    injector.bind(generator)
    injection = injector.inject(_passages()[:2], "Who found Zorblat Lake?")
    assert injection.kind == "parametric" and not injection.context and injection.weights.rank == 2
    ids = torch.tensor([lm.tokenizer.encode("Zorblat Lake was found by")])
    with torch.inference_mode():
        base = lm.model(ids).logits
        with injection.apply():
            adapted = lm.model(ids).logits
        assert float((adapted - base).abs().max()) > 0
        assert torch.equal(lm.model(ids).logits, base)  # removed on exit, weights untouched
    combo = DyPragCombineInjector(translator=str(translator[0]))
    combo.bind(generator)
    assert combo.inject(_passages()[:1], "q").kind == "combined"


def test_prag_in_pipeline_and_fallback_to_context(encoded, lm, generator, tmp_path, monkeypatch):
    from dynaprag.inject.parametric import PragInjector

    store_root, corpus = encoded[0], encoded[1]
    monkeypatch.setenv("DYNAPRAG_ADAPTERS", str(store_root))
    store_key = {"encode": {"failed_augmentation": "plain-text", "augment": {"prompts": "lenient"}}}
    pipe = _pipeline(lm, corpus, tmp_path, method="prag", options=store_key)
    answer = pipe.answer("Who found Zorblat Lake?")
    (event,) = answer.trace.retrievals
    assert event.injection == "parametric" and "z1" in event.hit_ids
    combined = pipe.answer("Who found Zorblat Lake?", method="prag-combine", options=store_key)
    assert combined.trace.retrievals[0].injection == "combined"
    injector = PragInjector(store=str(store_root), on_missing="context", encode=_config())
    injector.bind(generator)
    unseen = Passage("n1", "Nowhere", "A passage that was never encoded.")
    injection = injector.inject([_passages()[0], unseen], "q")
    assert injection.kind == "combined" and list(injection.context) == [unseen]
    assert any("fell back to in-context" in note for note in injection.notes)


def test_dragin_trigger_with_dyprag_injector(encoded, translator, lm, tmp_path, monkeypatch):
    """A composition no reference implementation offers: DRAGIN's RIND timing, DyPRAG's injection."""
    monkeypatch.setenv("DYNAPRAG_TRANSLATOR", str(translator[0]))
    # RIND is evaluated at sentence ends: give the draft room for one sentence.
    pipe = _pipeline(lm, encoded[1], tmp_path, max_new_tokens=40, method="dragin", injector="dyprag",
                     options={"theta": 0.0})
    answer = pipe.answer("Who first climbed Qwerty Pike?")
    assert answer.trace.retrievals, "RIND with theta=0 must trigger"
    assert all(event.injection == "parametric" for event in answer.trace.retrievals)


def test_prag_encodes_missing_documents_on_demand(lm, generator, tmp_path):
    """on_missing="encode": retrieved documents without adapters are augmented as one batch,
    trained, stored, and injected; the trace notes say so."""
    from dynaprag.inject.parametric import PragInjector

    injector = PragInjector(store=str(tmp_path / "adapters"), on_missing="encode", encode=_config())
    injector.bind(generator)
    passages = _passages()[:2]
    injection = injector.inject(passages, "q")
    assert injection.kind == "parametric" and not list(injection.context)
    assert sum("encoded on demand" in note for note in injection.notes) == 2
    store = AdapterStore(tmp_path / "adapters", lm.fingerprint, _config().store_config())
    assert len(store) == 2 and store.verify() == []
    assert {e["augment_batch"] for e in store.entries().values()} == {2}
