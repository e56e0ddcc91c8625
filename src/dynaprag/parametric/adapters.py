"""The adapter store: one safetensors file per document, a checksummed manifest, an in-memory LRU.

PRAG encodes every corpus document offline into its own LoRA (Su et al., SIGIR 2025, §3.2);
the store is where those adapters live between ``dynaprag encode`` and question time.

Keys. An adapter is only valid for the base model it was trained on, the LoRA/training
settings, and the exact document text, so the store is namespaced as
``ROOT/<model fingerprint>/<config hash>/`` and files are named by ``Passage.content_hash``.
A changed document gets a new hash and is simply re-encoded.

Integrity. Files are written to a temporary name and ``os.replace``-d into place; only then is
the document added to ``manifest.json`` (under a file lock, so Ray workers or parallel
encoders can share a store). A killed encoder therefore never leaves a file that counts as
finished: ``has()`` requires a manifest entry. Loading re-computes the file's sha256 and
refuses a mismatch (:class:`AdapterIntegrityError`). Weights are only ever read with
``safetensors`` (never pickle).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

MANIFEST = "manifest.json"


class AdapterIntegrityError(RuntimeError):
    """An adapter file whose checksum does not match the manifest (corrupt or tampered)."""


def config_hash(config: Mapping[str, Any]) -> str:
    """A short stable hash of the LoRA + training + augmentation settings."""
    return hashlib.sha256(json.dumps(dict(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class AdapterStore:
    """Per-document LoRA adapters for one (base model, config) pair.

    >>> store = AdapterStore("adapters", lm.fingerprint, {"r": 2})      # doctest: +SKIP
    >>> store.put(passage.content_hash, adapter, {"doc_id": passage.id})  # doctest: +SKIP
    >>> store.get(passage.content_hash)["model.layers.0.mlp.up_proj.lora_A"].shape  # doctest: +SKIP
    torch.Size([2, 576])
    """

    def __init__(self, root: str | Path, model_fingerprint: str, config: Mapping[str, Any],
                 cache_size: int = 64):
        self.root = Path(root)
        self.model_fingerprint = model_fingerprint
        self.config = dict(config)
        self.dir = self.root / model_fingerprint / config_hash(self.config)
        self.files = self.dir / "adapters"
        self.files.mkdir(parents=True, exist_ok=True)
        self.cache_size = cache_size
        self._lru: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self.hits = self.misses = 0
        if not (self.dir / MANIFEST).exists():
            with self._locked():
                if not (self.dir / MANIFEST).exists():
                    self._write_manifest({"model_fingerprint": model_fingerprint, "config": self.config,
                                          "entries": {}})
        for stale in self.files.glob(".*.tmp-*"):  # leftovers of a killed writer: never finished
            if not _pid_alive(stale.name.rsplit("-", 1)[-1]):
                stale.unlink(missing_ok=True)

    # -- manifest -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.dir / "manifest.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_manifest(self) -> dict[str, Any]:
        path = self.dir / MANIFEST
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise AdapterIntegrityError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        _atomic_write_text(self.dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))

    def entries(self) -> dict[str, dict[str, Any]]:
        """``content_hash -> entry`` (file, sha256, bytes, doc, training stats) of finished adapters."""
        return self._read_manifest()["entries"]

    def path(self, content_hash: str) -> Path:
        return self.files / f"{content_hash}.safetensors"

    def has(self, content_hash: str) -> bool:
        """True only for a finished adapter: a manifest entry whose file exists with its size."""
        entry = self.entries().get(content_hash)
        if entry is None:
            return False
        path = self.path(content_hash)
        return path.is_file() and path.stat().st_size == entry["bytes"]

    def __len__(self) -> int:
        return len(self.entries())

    # -- read / write ---------------------------------------------------------------------
    def put(self, content_hash: str, adapter: Mapping[str, torch.Tensor],
            info: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Save ``adapter`` atomically, then record it (with its sha256) in the manifest."""
        from safetensors.torch import save_file

        path = self.path(content_hash)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in adapter.items()}
        metadata = {"content_hash": content_hash, "model_fingerprint": self.model_fingerprint,
                    "config": json.dumps(self.config, sort_keys=True, default=str)}
        save_file(tensors, str(tmp), metadata=metadata)
        entry = {"file": f"adapters/{path.name}", "sha256": sha256_file(tmp), "bytes": tmp.stat().st_size,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **dict(info or {})}
        os.replace(tmp, path)
        with self._locked():
            manifest = self._read_manifest()
            manifest["entries"][content_hash] = entry
            self._write_manifest(manifest)
        self._remember(content_hash, tensors)
        return entry

    def get(self, content_hash: str) -> dict[str, torch.Tensor]:
        """The adapter of a document (LRU-cached), checksum-verified when read from disk."""
        if content_hash in self._lru:
            self._lru.move_to_end(content_hash)
            self.hits += 1
            return self._lru[content_hash]
        self.misses += 1
        entry = self.entries().get(content_hash)
        if entry is None:
            raise KeyError(f"no adapter for document {content_hash[:12]}... in {self.dir}")
        path = self.path(content_hash)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"]:
            raise AdapterIntegrityError(
                f"{path}: sha256 {digest[:12]}... does not match the manifest ({entry['sha256'][:12]}...); "
                f"delete the file and re-run `dynaprag encode` to rebuild it")
        from safetensors.torch import load

        tensors = load(data)
        self._remember(content_hash, tensors)
        return tensors

    def _remember(self, content_hash: str, tensors: dict[str, torch.Tensor]) -> None:
        if self.cache_size <= 0:
            return
        self._lru[content_hash] = tensors
        self._lru.move_to_end(content_hash)
        while len(self._lru) > self.cache_size:
            self._lru.popitem(last=False)

    def verify(self) -> list[str]:
        """Content hashes whose files are missing or fail their checksum (empty = all good)."""
        bad = []
        for content_hash, entry in self.entries().items():
            path = self.path(content_hash)
            if not path.is_file() or sha256_file(path) != entry["sha256"]:
                bad.append(content_hash)
        return bad

    def total_bytes(self) -> int:
        return sum(e["bytes"] for e in self.entries().values())


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
