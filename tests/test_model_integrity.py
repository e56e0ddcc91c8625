"""Model folders that must be refused or repaired before a model runs (issue 15, items 3-6).

A folder's index must not smuggle in a pickle, every weight must load, a damaged safetensors
file is named (a user's folder) or rebuilt (our cache), two processes converting the same
model convert it once, and a killed conversion's staging folder is swept by the next run.

The model-folder tests load real (tiny, config-made) Llama models through ``load_model``.
The cache tests stand a small fake multi-part GGUF source and a fake dequantiser in for the
~70 s transformers conversion: what they test is the cache's locking, staging, checking and
sweeping around it (the real conversion is covered by ``test_models.py``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from dynaprag.files import TEMP_MARKER
from dynaprag.lm import ModelError, load_model
from dynaprag.lm import models
from dynaprag.lm.sources import ModelSource

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def tiny_model_folder(path: Path) -> Path:
    """A complete, loadable tiny Llama (safetensors) with the default model's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    cached = Path(models.resolve_source("smollm2-135m")[0])
    for name in TOKENIZER_FILES:
        if (cached / name).is_file():
            shutil.copy(cached / name, path / name)
    return path


@pytest.fixture
def tiny(tmp_path):
    return tiny_model_folder(tmp_path / "tiny")


def write_index(folder: Path, weight_map: dict[str, str]) -> None:
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# --- item 3: every weight file is a safetensors file inside the folder, every weight loads -------

def test_a_complete_tiny_folder_loads(tiny):
    loaded = load_model(str(tiny), dtype="float32")
    assert loaded.model.config.hidden_size == 16 and loaded.fingerprint


def test_index_naming_a_pickle_is_refused_before_anything_is_unpickled(tiny, monkeypatch):
    from safetensors.torch import load_file

    state = load_file(str(tiny / "model.safetensors"))
    torch.save(state, tiny / "pytorch_model.bin")
    (tiny / "model.safetensors").unlink()
    write_index(tiny, {name: "pytorch_model.bin" for name in state})

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a pickle")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(ModelError) as exc:
        load_model(str(tiny), dtype="float32")
    assert str(tiny) in one_line(exc) and "pytorch_model.bin" in str(exc.value)


def test_index_naming_a_file_outside_the_folder_is_refused(tiny):
    outside = tiny.parent / "elsewhere"
    outside.mkdir()
    (tiny / "model.safetensors").rename(outside / "model.safetensors")
    write_index(tiny, {"model.norm.weight": "../elsewhere/model.safetensors"})
    with pytest.raises(ModelError, match="outside") as exc:
        load_model(str(tiny), dtype="float32")
    assert str(tiny) in one_line(exc)


def test_index_naming_a_missing_shard_is_refused(tiny):
    (tiny / "model.safetensors").rename(tiny / "model-00001-of-00002.safetensors")
    write_index(tiny, {"model.norm.weight": "model-00001-of-00002.safetensors",
                       "lm_head.weight": "model-00002-of-00002.safetensors"})
    with pytest.raises(ModelError, match="model-00002-of-00002.safetensors") as exc:
        load_model(str(tiny), dtype="float32")
    assert str(tiny) in one_line(exc)


def test_weights_that_do_not_fit_the_config_are_refused(tiny):
    """Renamed tensors load as a model whose weights are all random: refuse it, name the folder."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny / "model.safetensors"))
    save_file({f"backbone.{k}": v for k, v in state.items()}, str(tiny / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(ModelError, match="missing") as exc:
        load_model(str(tiny), dtype="float32")
    assert str(tiny) in one_line(exc)


# --- item 6: a damaged safetensors file ---------------------------------------------------------

def test_truncated_weights_in_a_users_folder_name_the_folder_and_the_fix(tiny):
    weights = tiny / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelError, match="damaged") as exc:
        load_model(str(tiny), dtype="float32")
    text = one_line(exc)
    assert str(weights) in text and ("re-download" in text or "re-save" in text)


# --- the cache of converted models: a fake GGUF source, a fake dequantiser -----------------------

FAKE_PARTS = {"data/p0": b"GGUF-fake-part-0|", "data/p1": b"part-1"}


def fake_package(root: Path, name: str = "fake_gguf_pkg") -> Path:
    """A package holding a model's GGUF in two parts, as the bundled multi-part models do."""
    pkg = root / name
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for rel, data in FAKE_PARTS.items():
        (pkg / rel).write_bytes(data)
    return root


# Shared by this process and the subprocesses: the source and the fake dequantiser, which logs
# each conversion (PID) and writes a small but complete safetensors model into the staging folder.
FAKE_SETUP = textwrap.dedent(f"""
    import os, time
    from pathlib import Path
    import torch
    from safetensors.torch import save_file
    from dynaprag.lm import models
    from dynaprag.lm.sources import ModelSource

    SOURCE = ModelSource(alias="fake", description="", install="pip install fake", license="",
                         parts=(("fake_gguf_pkg", "data/p0"), ("fake_gguf_pkg", "data/p1")),
                         size_mb=1, chat_template=False,
                         sha256="{hashlib.sha256(b''.join(FAKE_PARTS.values())).hexdigest()}")

    def fake_dequantise(gguf_path, staging, log, delay=0.0):
        assert Path(gguf_path).read_bytes() == {b''.join(FAKE_PARTS.values())!r}
        with open(log, "a") as fh:
            fh.write(f"{{os.getpid()}}\\n")
        time.sleep(delay)
        (Path(staging) / "config.json").write_text("{{}}")
        save_file({{"w": torch.ones(4, 4)}}, str(Path(staging) / "model.safetensors"),
                  metadata={{"format": "pt"}})
""")


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    """A fresh ``$DYNAPRAG_CACHE``, the fake package importable, and the fake source + dequantiser."""
    fake_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sys.modules.pop("fake_gguf_pkg", None)
    monkeypatch.setenv("DYNAPRAG_CACHE", str(tmp_path / "cache"))
    namespace: dict = {}
    exec(FAKE_SETUP, namespace)
    log = tmp_path / "conversions.log"
    monkeypatch.setattr(models, "_dequantise",
                        lambda gguf, staging, progress=True: namespace["fake_dequantise"](gguf, staging, log))
    return namespace["SOURCE"], log


def conversions(log: Path) -> int:
    return len(log.read_text().split()) if log.exists() else 0


FINISHED = re.compile(r"(fake|mine)-[0-9a-f]{16}")


def leftovers(cache: Path) -> list[str]:
    """Temporary files or folders left in the model cache (lock files are not leftovers)."""
    models_dir = cache / "models"
    if not models_dir.is_dir():
        return []
    entries = [*models_dir.iterdir(), *(models_dir / "gguf").glob("*")]
    return sorted(p.name for p in entries
                  if p.name != "gguf" and not p.name.endswith(".lock") and not FINISHED.fullmatch(p.name))


def test_damaged_cached_conversion_is_converted_again_with_a_warning(fake_cache, tmp_path, capsys):
    source, log = fake_cache
    folder = models.cached_alias_folder(source)
    assert conversions(log) == 1 and models.cached_alias_folder(source) == folder
    assert conversions(log) == 1  # the intact cache is reused
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    capsys.readouterr()
    assert models.cached_alias_folder(source) == folder
    assert conversions(log) == 2
    warning = capsys.readouterr().err
    assert "damaged" in warning and str(folder) in warning
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as handle:
        assert list(handle.keys()) == ["w"]
    assert leftovers(tmp_path / "cache") == []


def test_damaged_cache_of_a_users_gguf_is_converted_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DYNAPRAG_CACHE", str(tmp_path / "cache"))
    namespace: dict = {}
    exec(FAKE_SETUP, namespace)
    log = tmp_path / "conversions.log"
    monkeypatch.setattr(models, "_dequantise",
                        lambda gguf, staging, progress=True: namespace["fake_dequantise"](gguf, staging, log))
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"".join(FAKE_PARTS.values()))
    folder = Path(models.resolve_source(str(gguf))[0])
    weights = folder / "model.safetensors"
    weights.write_bytes(b"")
    assert Path(models.resolve_source(str(gguf))[0]) == folder
    assert conversions(log) == 2 and "damaged" in capsys.readouterr().err


def test_failed_conversion_leaves_nothing_behind(fake_cache, tmp_path, monkeypatch):
    source, _ = fake_cache

    def broken(gguf, staging, progress=True):
        (Path(staging) / "model.safetensors").write_bytes(b"half a model")
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(models, "_dequantise", broken)
    with pytest.raises(RuntimeError, match="conversion failed"):
        models.cached_alias_folder(source)
    assert leftovers(tmp_path / "cache") == []
    assert not [p for p in (tmp_path / "cache" / "models").iterdir() if FINISHED.fullmatch(p.name)]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_killed_conversions_leftovers_are_swept_and_a_live_ones_kept(fake_cache, tmp_path):
    source, log = fake_cache
    models_dir = tmp_path / "cache" / "models"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        dead = dead_pid()
        own = f"{source.alias}-{source.identity()}"  # the converted folder's name
        stale = [models_dir / f".{own}.dynaprag-staging-{dead}", models_dir / "gguf" / f".x.dynaprag-staging-{dead}",
                 models_dir / f"{own}.staging-{dead}", models_dir / "gguf" / f"{own}.staging-{dead}"]
        kept = [models_dir / f".{own}.dynaprag-staging-{live.pid}", models_dir / f"{own}.staging-{live.pid}",
                models_dir / "gguf" / f"{own}.staging-{live.pid}",
                models_dir / "gguf" / f"other-model.staging-{dead}"]  # not this model's: an earlier name, unmarked
        for folder in stale + kept:
            folder.mkdir(parents=True)
            (folder / "model.safetensors").write_bytes(b"x" * 1000)
            if "dynaprag-" in folder.name:
                (folder / TEMP_MARKER).write_text("")
        models.cached_alias_folder(source)
        assert [p.exists() for p in stale] == [False] * 4
        assert [p.exists() for p in kept] == [True] * 4
    finally:
        live.kill()
        live.wait()


# --- item 4: two processes on a fresh cache convert once -----------------------------------------

RACE = FAKE_SETUP + textwrap.dedent("""
    import sys
    go, log = Path(sys.argv[1]), sys.argv[2]
    models._dequantise = lambda gguf, staging, progress=True: fake_dequantise(gguf, staging, log, 1.0)
    while not go.exists():
        time.sleep(0.01)
    print(models.cached_alias_folder(SOURCE))
""")


def test_two_processes_on_a_fresh_cache_convert_the_model_once(tmp_path):
    site = fake_package(tmp_path / "site")
    env = {**os.environ, "DYNAPRAG_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    go, log = tmp_path / "go", tmp_path / "conversions.log"
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(go), str(log)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    time.sleep(0.5)
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    folders = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(folders) == 1 and conversions(log) == 1
    assert leftovers(tmp_path / "cache") == []
