"""Adapter store: safetensors round trip, checksums, unfinished files, LRU, keys."""
from __future__ import annotations

import json

import pytest
import torch

from dynaprag.parametric.adapters import AdapterIntegrityError, AdapterStore


def _adapter(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"model.layers.0.mlp.up_proj.lora_A": torch.randn(2, 16, generator=g),
            "model.layers.0.mlp.up_proj.lora_B": torch.randn(32, 2, generator=g)}


def test_round_trip_manifest_and_keys(tmp_path):
    store = AdapterStore(tmp_path, "modelA", {"r": 2}, cache_size=0)
    entry = store.put("h1", _adapter(1), {"doc": {"id": "d1"}})
    manifest = json.loads((store.dir / "manifest.json").read_text())
    assert manifest["entries"]["h1"]["sha256"] == entry["sha256"] and entry["bytes"] > 0
    assert store.path("h1").suffix == ".safetensors"
    again = AdapterStore(tmp_path, "modelA", {"r": 2})
    got = again.get("h1")
    for key, value in _adapter(1).items():
        assert torch.equal(got[key], value)
    assert again.has("h1") and not again.has("h2") and again.verify() == []
    assert not AdapterStore(tmp_path, "modelB", {"r": 2}).has("h1")  # another base model
    assert not AdapterStore(tmp_path, "modelA", {"r": 4}).has("h1")  # another LoRA config


def test_checksum_failure_is_refused(tmp_path):
    store = AdapterStore(tmp_path, "m", {"r": 2}, cache_size=0)
    store.put("h1", _adapter(1))
    path = store.path("h1")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(AdapterIntegrityError, match="sha256"):
        store.get("h1")
    assert store.verify() == ["h1"]


def test_unfinished_files_are_never_taken_as_finished(tmp_path):
    store = AdapterStore(tmp_path, "m", {"r": 2})
    store.files.joinpath(".h2.safetensors.dynaprag-tmp-999999").write_bytes(b"partial")  # killed writer
    store.files.joinpath("h4.safetensors.tmp-999999").write_bytes(b"partial")  # an earlier version's name
    store.path("h3").write_bytes(b"renamed but never recorded")  # killed before the manifest update
    assert not store.has("h2") and not store.has("h3") and len(store) == 0
    reopened = AdapterStore(tmp_path, "m", {"r": 2})
    assert sorted(p.name for p in reopened.files.iterdir()) == ["h3.safetensors"]  # dead pids' partials removed
    reopened.put("h3", _adapter(3))
    assert reopened.has("h3") and reopened.verify() == []


def test_lru_keeps_recent_adapters(tmp_path):
    store = AdapterStore(tmp_path, "m", {"r": 2}, cache_size=2)
    for i in range(3):
        store.put(f"h{i}", _adapter(i))
    store.hits = store.misses = 0
    store.get("h2"), store.get("h1")
    assert (store.hits, store.misses) == (2, 0)
    store.get("h0")
    assert store.misses == 1


def test_same_size_damage_is_not_a_finished_adapter(tmp_path):
    """16 flipped bytes keep the file's size: `has()` must still refuse it (so encode redoes it)."""
    store = AdapterStore(tmp_path, "m", {"r": 2}, cache_size=0)
    store.put("h1", _adapter(1))
    path = store.path("h1")
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    reopened = AdapterStore(tmp_path, "m", {"r": 2}, cache_size=0)
    assert not reopened.has("h1")
    assert reopened.status("h1").startswith("damaged")
    with pytest.raises(AdapterIntegrityError) as err:
        reopened.get("h1")
    message = str(err.value)
    assert str(path) in message and "manifest.json" in message and "'h1'" in message
    assert isinstance(err.value, ValueError) and "\n" not in message


@pytest.mark.parametrize("field", ["bytes", "sha256"])
def test_manifest_entry_without_size_or_checksum(tmp_path, field):
    store = AdapterStore(tmp_path, "m", {"r": 2}, cache_size=0)
    store.put("h1", _adapter(1))
    manifest_path = store.dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["entries"]["h1"][field]
    manifest_path.write_text(json.dumps(manifest))
    assert not store.has("h1")  # not a bare KeyError
    assert store.verify() == ["h1"]
    with pytest.raises(AdapterIntegrityError) as err:
        store.get("h1")
    message = str(err.value)
    assert str(manifest_path) in message and "'h1'" in message and field in message
    store.put("h1", _adapter(1))  # re-encoding repairs the entry
    assert store.has("h1") and store.verify() == []


def test_unknown_adapter_error_names_the_store(tmp_path):
    store = AdapterStore(tmp_path, "m", {"r": 2})
    with pytest.raises(KeyError, match="manifest.json"):
        store.get("nope")


def test_manifest_without_entries_is_named(tmp_path):
    store = AdapterStore(tmp_path, "m", {"r": 2})
    (store.dir / "manifest.json").write_text("{}")
    with pytest.raises(AdapterIntegrityError, match="manifest.json.*entries"):
        store.entries()
