"""The adapter store: one safetensors file per document, a checksummed manifest, an in-memory LRU.

PRAG encodes every corpus document offline into its own LoRA (Su et al., SIGIR 2025, §3.2);
the store is where those adapters live between ``dynaprag encode`` and question time.

Keys. An adapter is only valid for the base model it was trained on, the LoRA/training
settings, and the exact document text, so the store is namespaced as
``ROOT/<model fingerprint>/<config hash>/`` and files are named by ``Passage.content_hash``.
A changed document gets a new hash and is simply re-encoded.

Integrity. Files are written to a temporary name and ``os.replace``-d into place; only then is
the document added to ``manifest.json`` with the file's sha256 and size (under a file lock,
so Ray workers or parallel encoders can share a store). A document counts as finished only
when its manifest entry is well formed and its file still has that size and that sha256
(:meth:`AdapterStore.status`), so a killed encoder, a truncated or bit-flipped file, or a
hand-edited entry all read as "not encoded": ``dynaprag encode`` redoes them and the PRAG
injector re-encodes them or falls back to context (its ``on_missing``). Digests are cached
per (size, mtime, inode), so checking a store does not re-read unchanged files. Loading
verifies the bytes it actually parses and refuses a mismatch with an
:class:`AdapterIntegrityError` that names the file, the manifest and the entry. Weights are
only ever read with ``safetensors`` (never pickle).

Repair. Each adapter file also carries its own manifest entry and the sha256 of its tensor
data in its safetensors header, so a manifest that is lost or unreadable as a whole can be
rebuilt from the intact files (:mod:`dynaprag.parametric.store_repair`,
``dynaprag encode --repair``) instead of re-encoding the whole corpus.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch

from dynaprag.files import (atomic_write_bytes, atomic_write_json, locked, sha256_file, sweep_legacy, sweep_legacy_of,
                            sweep_stale, sweep_stale_of)

MANIFEST = "manifest.json"
#: what to run when a manifest cannot be read as a whole (it keeps the intact adapters)
REPAIR_HINT = "run `dynaprag encode --repair --store {root}` to rebuild it from the intact adapters"
OK = "ok"
SKIPPED = "skipped"  # PRAG skips a passage whose augmentation never parsed: recorded, no file


class AdapterStoreError(ValueError):
    """A store the user can repair: the message names the file, the manifest entry and the fix."""


class AdapterIntegrityError(AdapterStoreError):
    """An adapter file or manifest entry that is damaged (checksum, size or fields do not match)."""


def config_hash(config: Mapping[str, Any]) -> str:
    """A short stable hash of the LoRA + training + augmentation settings."""
    return hashlib.sha256(json.dumps(dict(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


def tensor_data_sha256(data: bytes) -> str:
    """sha256 of a safetensors file's tensor bytes (all after the 8-byte length and the JSON header).

    The same for a file with or without metadata, so a file can carry its own data checksum.
    """
    header = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header:]).hexdigest()


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
        self.manifest_path = self.dir / MANIFEST
        self.cache_size = cache_size
        self._lru: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._digests: dict[str, tuple[tuple[int, int, int], str]] = {}
        self.hits = self.misses = 0
        if not self.manifest_path.exists():
            with locked(self.manifest_path):
                if not self.manifest_path.exists():
                    atomic_write_json(self.manifest_path, {"model_fingerprint": model_fingerprint,
                                                           "config": self.config, "entries": {}})
        self.sweep()

    def sweep(self) -> list[Path]:
        """Remove what killed writers left in the store's own folders (temporary adapter files,
        also an earlier version's ``HASH.safetensors.tmp-<pid>``, and manifest writes); return them.

        Partial files of killed writers never count as finished anyway; this reclaims their space.
        """
        return (sweep_stale(self.files) + sweep_legacy(self.files, r".+\.safetensors")
                + sweep_stale_of(self.manifest_path) + sweep_legacy_of(self.manifest_path))

    # -- manifest -------------------------------------------------------------------------
    def _read_manifest(self) -> dict[str, Any]:
        path = self.manifest_path
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            why = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
            raise AdapterIntegrityError(f"{path}: not valid JSON ({why}); "
                                        + REPAIR_HINT.format(root=self.root)) from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), dict):
            raise AdapterIntegrityError(f"{path}: no 'entries' object; " + REPAIR_HINT.format(root=self.root))
        return manifest

    def entries(self) -> dict[str, dict[str, Any]]:
        """``content_hash -> entry`` (file, sha256, bytes, doc, training stats) as recorded.

        Recorded is not finished: use :meth:`has` / :meth:`status` before trusting an entry.
        """
        return self._read_manifest()["entries"]

    def path(self, content_hash: str) -> Path:
        return self.files / f"{content_hash}.safetensors"

    def _where(self, content_hash: str) -> str:
        return f"{self.path(content_hash)} (entry {content_hash!r} of {self.manifest_path})"

    def _digest(self, path: Path, stat: os.stat_result) -> str:
        key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        cached = self._digests.get(str(path))
        if cached is None or cached[0] != key:
            cached = (key, sha256_file(path))
            self._digests[str(path)] = cached
        return cached[1]

    def status(self, content_hash: str, entry: Mapping[str, Any] | None = None) -> str:
        """``"ok"`` for a finished adapter, ``"skipped"`` for a passage PRAG does not use (its
        augmentation failed), else why not: ``"not encoded"``, ``"missing file"``, ``"damaged ..."``
        (the reason names the field or check that failed)."""
        if entry is None:
            entry = self.entries().get(content_hash)
        if entry is None:
            return "not encoded"
        if not isinstance(entry, Mapping):
            return "damaged manifest entry (not an object)"
        if entry.get("skipped") is True:
            return SKIPPED
        for name, kind in (("sha256", str), ("bytes", int)):
            if not isinstance(entry.get(name), kind):
                return f"damaged manifest entry (no valid '{name}' field)"
        path = self.path(content_hash)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return "missing file"
        if stat.st_size != entry["bytes"]:
            return f"damaged file (size {stat.st_size} bytes, manifest says {entry['bytes']})"
        if self._digest(path, stat) != entry["sha256"]:
            return "damaged file (sha256 does not match the manifest)"
        return OK

    def has(self, content_hash: str) -> bool:
        """True only for a finished adapter: a well-formed entry whose file has its size and sha256."""
        return self.status(content_hash) == OK

    def __len__(self) -> int:
        return len(self.entries())

    # -- read / write ---------------------------------------------------------------------
    def put(self, content_hash: str, adapter: Mapping[str, torch.Tensor],
            info: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Save ``adapter`` atomically, then record it (with its sha256) in the manifest.

        Replaces a damaged or outdated adapter of the same document.
        """
        from safetensors.torch import save

        path = self.path(content_hash)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in adapter.items()}
        entry = {"file": f"adapters/{path.name}", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 **dict(info or {})}
        metadata = {"content_hash": content_hash, "model_fingerprint": self.model_fingerprint,
                    "config": json.dumps(self.config, sort_keys=True, default=str),
                    "data_sha256": tensor_data_sha256(save(tensors)),
                    "entry": json.dumps(entry, sort_keys=True, default=str)}
        data = save(tensors, metadata=metadata)
        entry = {**entry, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        atomic_write_bytes(path, data)
        with locked(self.manifest_path):
            manifest = self._read_manifest()
            manifest["entries"][content_hash] = entry
            atomic_write_json(self.manifest_path, manifest)
        self._remember(content_hash, tensors)
        return entry

    def skip(self, content_hash: str, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Record that a document gets no adapter (its augmentation failed), so it is not redone."""
        entry = {"skipped": True, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **dict(info or {})}
        self.path(content_hash).unlink(missing_ok=True)
        with locked(self.manifest_path):
            manifest = self._read_manifest()
            manifest["entries"][content_hash] = entry
            atomic_write_json(self.manifest_path, manifest)
        self.forget(content_hash)
        return entry

    def finished(self) -> dict[str, dict[str, Any]]:
        """The entries of finished adapters only (no skipped, damaged or missing ones)."""
        return {h: e for h, e in self.entries().items() if self.status(h, e) == OK}

    def get(self, content_hash: str) -> dict[str, torch.Tensor]:
        """The adapter of a document (LRU-cached), checksum-verified when read from disk.

        Raises ``KeyError`` for a document that was never encoded and
        :class:`AdapterIntegrityError` for a damaged file or entry.
        """
        if content_hash in self._lru:
            self._lru.move_to_end(content_hash)
            self.hits += 1
            return self._lru[content_hash]
        self.misses += 1
        entry = self.entries().get(content_hash)
        if entry is None:
            raise KeyError(f"no adapter for document {content_hash!r} in {self.manifest_path}: "
                           f"run `dynaprag encode` on the corpus")
        reason = self.status(content_hash, entry)
        if reason == SKIPPED:
            raise KeyError(f"document {content_hash!r} has no adapter in {self.manifest_path}: it was skipped "
                           f"because its augmentation failed")
        if reason == "missing file":
            raise AdapterIntegrityError(f"{self._where(content_hash)}: the file is missing; "
                                        f"re-run `dynaprag encode` to rebuild it")
        if reason != OK and "manifest entry" in reason:
            raise AdapterIntegrityError(f"{self._where(content_hash)}: {reason}; re-run `dynaprag encode` "
                                        f"to rebuild it")
        path = self.path(content_hash)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != entry["bytes"] or digest != entry["sha256"]:
            raise AdapterIntegrityError(
                f"{self._where(content_hash)}: damaged file (sha256 {digest[:12]}..., manifest "
                f"{entry['sha256'][:12]}...); re-run `dynaprag encode` to rebuild it")
        from safetensors.torch import load

        try:
            tensors = load(data)
        except Exception as exc:  # a checksummed file that still does not parse: written by something else
            raise AdapterIntegrityError(f"{self._where(content_hash)}: not a safetensors file ({exc}); "
                                        f"delete it and re-run `dynaprag encode`") from None
        self._remember(content_hash, tensors)
        return tensors

    def forget(self, content_hash: str) -> None:
        """Drop a document from the in-memory cache (after its file was found damaged or replaced)."""
        self._lru.pop(content_hash, None)

    def _remember(self, content_hash: str, tensors: dict[str, torch.Tensor]) -> None:
        if self.cache_size <= 0:
            return
        self._lru[content_hash] = tensors
        self._lru.move_to_end(content_hash)
        while len(self._lru) > self.cache_size:
            self._lru.popitem(last=False)

    def verify(self) -> list[str]:
        """Content hashes whose entries are damaged or whose files are missing or fail their checksum."""
        return [h for h, entry in self.entries().items() if self.status(h, entry) not in (OK, SKIPPED)]
