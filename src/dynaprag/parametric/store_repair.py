"""Rebuild an adapter store's manifest from its intact adapter files (``dynaprag encode --repair``).

Why: the manifest is the one file that says which adapters are finished. When it cannot be
read as a whole (a disk error, a hand edit, a copy cut short), every ``eval`` and ``encode`` on
the store stops with one line, and re-encoding a corpus costs minutes per document. The
adapters themselves are usually fine, and each one says what it is: its safetensors header
holds the document's content hash, the model fingerprint, the store config, the sha256 of its
tensor data and its own manifest entry (:meth:`~dynaprag.parametric.adapters.AdapterStore.put`).

An adapter is kept only when it passes every check that applies: it parses as safetensors
(never pickle) and every tensor loads; its header names this folder's model and config and
its file name's hash; its tensor bytes match the header's ``data_sha256``; and where the old
manifest is readable and has an entry for it, the file matches that entry's size and sha256.
Adapters written before headers carried checksums are kept when they parse and match the
folder, and are counted as ``unverified``. Everything else is left out of the new manifest,
so the next ``dynaprag encode`` redoes it. The unreadable manifest is kept next to the new one
as ``manifest.json.damaged-<time>``.

>>> report = repair_store("~/.cache/dynaprag/adapters/<fingerprint>/<config hash>")  # doctest: +SKIP
>>> report.kept, report.dropped                                                      # doctest: +SKIP
(118, {'3f2a...': 'tensor data does not match its data_sha256'})
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynaprag.files import atomic_write_json, locked
from dynaprag.parametric.adapters import MANIFEST, config_hash, tensor_data_sha256

__all__ = ["RepairReport", "check_adapter_file", "encoding_folders", "repair_store"]


@dataclass
class RepairReport:
    """What :func:`repair_store` found in one encoding folder and what the new manifest holds."""

    folder: Path
    manifest_was: str  # "ok", or why the old manifest could not be used as a whole
    kept: int = 0  # adapters recorded in the new manifest
    unverified: int = 0  # of those, files from before headers carried checksums (parsed and matched only)
    skipped_kept: int = 0  # "skipped" entries (no adapter by design) carried over from a readable manifest
    dropped: dict[str, str] = field(default_factory=dict)  # content hash -> why its file was left out
    backup: Path | None = None  # where the unreadable manifest was kept
    written: bool = False  # False when the manifest was already complete and correct

    def summary(self) -> str:
        text = (f"{self.folder}: manifest {self.manifest_was}; kept {self.kept} adapters"
                + (f" ({self.unverified} without a header checksum)" if self.unverified else "")
                + (f" and {self.skipped_kept} skipped documents" if self.skipped_kept else ""))
        if self.dropped:
            first = next(iter(self.dropped.items()))
            text += f"; left out {len(self.dropped)} damaged (first {first[0][:12]}...: {first[1]})"
        if self.backup:
            text += f"; old manifest kept as {self.backup.name}"
        return text if self.written else text + "; nothing to change"


def encoding_folders(root: str | Path) -> list[Path]:
    """The encoding folders ``ROOT/<fingerprint>/<config hash>`` under a store root, or ``root``
    itself when it is one (it has an ``adapters/`` folder)."""
    root = Path(root).expanduser()
    if (root / "adapters").is_dir():
        return [root]
    return sorted(p.parent for p in root.glob("*/*/adapters") if p.is_dir())


def check_adapter_file(path: Path, fingerprint: str, folder_hash: str) -> tuple[dict[str, str] | None, str]:
    """``(header metadata, "")`` for an intact adapter of this folder, else ``(None, why not)``."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load

    try:
        data = path.read_bytes()
        load(data)  # every tensor parses: a truncated or garbled file fails here
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
    except (OSError, SafetensorError, ValueError, RuntimeError) as exc:
        return None, f"not a readable safetensors file ({' '.join(str(exc).split())[:80]})"
    if meta.get("content_hash") != path.stem:
        return None, f"its header names document {meta.get('content_hash')!r}, not its file name"
    if meta.get("model_fingerprint") != fingerprint:
        return None, f"trained for model {meta.get('model_fingerprint')!r}, not this folder's {fingerprint}"
    try:
        config = json.loads(meta.get("config", ""))
    except ValueError:
        config = None
    if not isinstance(config, dict) or config_hash(config) != folder_hash:
        return None, "its header's config does not hash to this folder's name"
    if "data_sha256" in meta and tensor_data_sha256(data) != meta["data_sha256"]:
        return None, "tensor data does not match its data_sha256"
    meta["_sha256"], meta["_bytes"] = hashlib.sha256(data).hexdigest(), str(len(data))
    return meta, ""


def _old_manifest(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The old manifest when readable (even with damaged entries), and how it was."""
    if not path.exists():
        return None, "missing"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"unreadable ({type(exc).__name__})"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), dict):
        return None, "unreadable (no 'entries' object)"
    return manifest, "ok"


def _entry(content_hash: str, meta: dict[str, str], old: Any, path: Path) -> dict[str, Any]:
    """The manifest entry of an intact file: the old one if it matched, else the header's copy."""
    if isinstance(old, dict) and old.get("sha256") == meta["_sha256"]:
        return old
    try:
        entry = json.loads(meta["entry"]) if "entry" in meta else {}
    except ValueError:
        entry = {}
    if not isinstance(entry, dict):
        entry = {}
    entry.setdefault("file", f"adapters/{path.name}")
    entry.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime)))
    entry.update(sha256=meta["_sha256"], bytes=int(meta["_bytes"]), repaired=True)
    if "entry" not in meta:
        entry["info_lost"] = True  # an adapter from before headers carried its entry: usable, no document text
    return entry


def repair_store(folder: str | Path) -> RepairReport:
    """Rebuild ``folder``'s manifest (an encoding folder ``ROOT/<fingerprint>/<config hash>``)
    from its intact adapters; see the module docstring for what counts as intact."""
    folder = Path(folder).expanduser()
    files = folder / "adapters"
    if not files.is_dir():
        raise FileNotFoundError(f"{folder}: not an adapter store folder (no adapters/); pass the --store root "
                                "that `dynaprag encode` wrote")
    fingerprint, folder_hash = folder.parent.name, folder.name
    manifest_path = folder / MANIFEST
    with locked(manifest_path):
        old, state = _old_manifest(manifest_path)
        report = RepairReport(folder, state)
        old_entries = old["entries"] if old else {}
        entries: dict[str, Any] = {}
        config = old.get("config") if old else None
        for path in sorted(files.glob("*.safetensors")):
            content_hash = path.stem
            meta, why = check_adapter_file(path, fingerprint, folder_hash)
            previous = old_entries.get(content_hash)
            recorded = previous.get("sha256") if isinstance(previous, dict) else None
            if meta is not None and recorded not in (None, meta["_sha256"]):
                meta, why = None, "sha256 does not match the manifest entry"
            if meta is None:
                report.dropped[content_hash] = why
                continue
            entries[content_hash] = _entry(content_hash, meta, previous, path)
            report.kept += 1
            report.unverified += int("data_sha256" not in meta and not isinstance(previous, dict))
            if not isinstance(config, dict):
                config = json.loads(meta["config"])
        for content_hash, entry in old_entries.items():
            if content_hash in entries or content_hash in report.dropped:
                continue
            if isinstance(entry, dict) and entry.get("skipped") is True:
                entries[content_hash] = entry
                report.skipped_kept += 1
            else:
                report.dropped[content_hash] = "its file is missing"
        if old is not None and old_entries == entries:
            return report
        if old is None and manifest_path.exists():
            report.backup = manifest_path.with_name(f"{MANIFEST}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(manifest_path, report.backup)
        if not isinstance(config, dict):  # nothing intact: the next encode writes a fresh manifest
            report.written = report.backup is not None
            return report
        atomic_write_json(manifest_path, {"model_fingerprint": fingerprint, "config": config, "entries": entries})
        report.written = True
    return report

