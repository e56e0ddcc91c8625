"""Issue 27 item 8: ``dynaprag encode --repair`` rebuilds an unreadable manifest from the intact adapters.

A real store is encoded by the real encoder on the default model (three short documents, cheap
augmentation settings as in ``test_parametric_integrity.py``), copied, then damaged: the manifest
cut in half, one adapter bit-flipped. ``eval``/``encode`` stop with one line naming the repair
command; the repair keeps the two intact adapters with their full entries (read back from their
safetensors headers), leaves the damaged one out, and the next encode redoes only that one.
"""
from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from dynaprag.cli import app
from dynaprag.corpus import Passage
from dynaprag.parametric.adapters import MANIFEST, AdapterIntegrityError, AdapterStore
from dynaprag.parametric.augment import AugmentConfig
from dynaprag.parametric.encode import EncodeConfig, encode_corpus
from dynaprag.parametric.store_repair import encoding_folders, repair_store

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # one_thread: conftest

DOCS = [Passage("v1", "Vellum Bay", "Vellum Bay is a bay in Norway named in 1790 by Ole Berg."),
        Passage("v2", "Tarn Hollow", "Tarn Hollow is a village in Wales with 412 inhabitants."),
        Passage("v3", "Quill Ridge", "Quill Ridge is a mountain in Chile first climbed in 1921.")]


def _config() -> EncodeConfig:
    return EncodeConfig(failed_augmentation="plain-text", augment=AugmentConfig(
        prompts="lenient", greedy_first=True, max_new_tokens_rewrite=16, max_new_tokens_qa=48, max_retries=0))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, lm):
    """A store root with all three documents encoded by the real encoder, and its manifest's entries."""
    root = tmp_path_factory.mktemp("repair") / "adapters"
    store = AdapterStore(root, lm.fingerprint, _config().store_config())
    assert encode_corpus(lm, DOCS, store, _config()).encoded == 3
    return root, store.entries()


@pytest.fixture
def store_copy(pristine, tmp_path, lm):
    root, entries = pristine
    copy = tmp_path / "adapters"
    shutil.copytree(root, copy)
    return AdapterStore(copy, lm.fingerprint, _config().store_config()), entries


def _flip(path, at: float = 0.7) -> None:
    data = bytearray(path.read_bytes())
    middle = int(len(data) * at)
    for i in range(middle, middle + 16):
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))


def test_unreadable_manifest_names_the_repair_command_and_repair_keeps_intact_adapters(store_copy, lm):
    store, entries = store_copy
    h1, h2, h3 = (d.content_hash for d in DOCS)
    text = store.manifest_path.read_text()
    store.manifest_path.write_text(text[: len(text) // 2])  # a copy cut short
    _flip(store.path(h1))
    with pytest.raises(AdapterIntegrityError, match=rf"encode --repair --store {store.root}"):
        store.entries()
    corpus = store.root.parent / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": d.id, "title": d.title, "text": d.text}) + "\n" for d in DOCS))
    same = ["failed_augmentation=plain-text", "augment.prompts=lenient", "augment.greedy_first=true",
            "augment.max_new_tokens_rewrite=16", "augment.max_new_tokens_qa=48", "augment.max_retries=0"]
    stopped = CliRunner().invoke(app, ["encode", "--corpus", str(corpus), "--store", str(store.root),
                                       *[arg for knob in same for arg in ("--set", knob)]])
    assert stopped.exit_code == 2 and "Traceback" not in stopped.output
    assert "dynaprag encode --repair --store" in " ".join(stopped.output.split())

    result = CliRunner().invoke(app, ["encode", "--repair", "--store", str(store.root)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "kept 2 adapters" in said and "left out 1 damaged" in said and "manifest.json.damaged-" in said
    assert len(list(store.dir.glob(f"{MANIFEST}.damaged-*"))) == 1  # the unreadable one, kept for a look
    assert store.status(h1) == "not encoded" and store.has(h2) and store.has(h3) and store.verify() == []
    for h in (h2, h3):  # the full entry comes back from the file's header, document text included
        restored = store.entries()[h]
        assert restored.pop("repaired") is True
        assert restored == entries[h]
    assert store.get(h2).keys() == AdapterStore(store.root, lm.fingerprint, _config().store_config()).get(h2).keys()
    report = encode_corpus(lm, DOCS, store, _config())
    assert (report.encoded, report.skipped) == (1, 2)  # only the damaged document is redone
    again = repair_store(store.dir)
    assert not again.written and again.kept == 3 and again.dropped == {}


def test_repair_with_a_readable_manifest_checks_entries_and_adds_unrecorded_files(store_copy, lm):
    store, _ = store_copy
    h1, h2, h3 = (d.content_hash for d in DOCS)
    manifest = json.loads(store.manifest_path.read_text())
    del manifest["entries"][h3]  # killed after writing the file, before recording it
    manifest["entries"][h2]["sha256"] = "0" * 64  # an entry that no longer matches its file
    manifest["entries"]["f" * 64] = {"skipped": True, "doc": {"id": "x"}}  # PRAG's "no adapter" record
    store.manifest_path.write_text(json.dumps(manifest))
    report = repair_store(store.dir)
    assert report.manifest_was == "ok" and report.written and report.backup is None
    assert report.kept == 2 and report.skipped_kept == 1
    assert report.dropped == {h2: "sha256 does not match the manifest entry"}
    assert store.has(h1) and store.has(h3) and not store.has(h2)
    assert store.entries()["f" * 64]["skipped"] is True


def test_repair_refuses_adapters_of_another_model_or_config_and_keeps_old_ones_unverified(store_copy, lm):
    from safetensors.torch import load, save

    store, _ = store_copy
    h1, h2, h3 = (d.content_hash for d in DOCS)
    tensors = load(store.path(h1).read_bytes())
    old_style = {"content_hash": h1, "model_fingerprint": lm.fingerprint,
                 "config": json.dumps(store.config, sort_keys=True, default=str)}
    store.path(h1).write_bytes(save(tensors, metadata=old_style))  # written by an earlier dynaprag
    store.path(h2).write_bytes(save(tensors, metadata={**old_style, "content_hash": h2,
                                                       "model_fingerprint": "another-model"}))
    store.path(h3).write_bytes(store.path(h3).read_bytes()[:-100])  # truncated
    store.manifest_path.write_text("{")
    report = repair_store(store.dir)
    assert report.kept == 1 and report.unverified == 1
    assert "another-model" in report.dropped[h2] and "safetensors" in report.dropped[h3]
    entry = store.entries()[h1]
    assert entry["info_lost"] is True and store.has(h1)


def test_repair_of_a_folder_that_is_not_a_store_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    assert encoding_folders(tmp_path / "empty") == []
    result = CliRunner().invoke(app, ["encode", "--repair", "--store", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no adapter store" in " ".join(result.output.split())


def test_translator_train_on_an_unreadable_manifest_names_the_repair(store_copy, lm):
    from dynaprag.cli.parametric import store_encode_config

    store, _ = store_copy
    store.manifest_path.write_text('{"entries": {')
    with pytest.raises(ValueError, match=rf"manifest.json: not readable.*encode --repair --store {store.root}"):
        store_encode_config(str(store.root), lm.fingerprint)
    repair_store(store.dir)
    root, config = store_encode_config(str(store.root), lm.fingerprint)
    assert root == store.root and config.store_config() == _config().store_config()
