"""The folder of a local index: ``meta.json``, built aside, published whole, one builder at a time.

Every local backend (bm25, dense, milvus-lite's metadata) keeps its index in one folder
with a ``meta.json`` that records how it was built; the folder counts as built once
``meta.json`` exists. Why the care:

- **Two processes, one build.** Two runs started together on a fresh cache would both build
  the same index and replace each other's folder while the other loads it. :func:`build_lock`
  serialises builders per index folder (a file lock, PyPI ``filelock``); the second one
  re-checks :func:`is_built` after taking the lock and loads the first one's index.
- **Nothing half-built is served.** A build writes into ``.NAME.dynaprag-building-<pid>`` (a
  marked temporary folder, :func:`dynaprag.files.temp_dir`) and :func:`publish_dir` renames it
  into place only when complete.
- **Nothing is left behind.** :func:`building` removes the temporary folder when a build
  fails; a killed build's folder (its PID is gone) is swept the next time that index is built.
- **Nothing else is deleted.** The index folder's parent may be the user's (``--index-dir``):
  a sweep there looks only at this index's own marked temporary names, an earlier version's
  ``.NAME.building-<pid>`` is removed only inside the dynaprag cache, and a build replaces an
  existing folder only when it is a dynaprag index (:func:`is_index`).

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "idx"
>>> with build_lock(folder), building(folder) as tmp:
...     write_meta(tmp, {"backend": "demo"})
>>> is_built(folder), read_meta(folder)["backend"]
(True, 'demo')
"""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Iterator

from dynaprag.corpus import Passage
from dynaprag.files import (atomic_write_json, cache_dir, locked, publish_temp_dir, remove_temp_dir, sweep_legacy_of,
                            sweep_stale_of, temp_dir)

META = "meta.json"


def passage_text(p: Passage) -> str:
    """What an index sees of a passage: title and text (so a hop naming an entity finds its page)."""
    return f"{p.title}\n{p.text}" if p.title else p.text


def write_meta(folder: Path, meta: dict) -> None:
    """Write ``meta.json`` atomically; its presence marks the folder as a complete index."""
    atomic_write_json(Path(folder) / META, meta)


def read_meta(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / META).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FileNotFoundError(f"{folder} is not a dynaprag index (no readable {META}: {exc})") from None


def is_built(folder: Path) -> bool:
    return (Path(folder) / META).is_file()


def is_index(folder: Path) -> bool:
    """True when ``folder``'s ``meta.json`` is a dynaprag index's (a ``backend`` and its ``settings``)."""
    try:
        meta = json.loads((Path(folder) / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("backend"), str) and isinstance(meta.get("settings"), dict)


def _in_cache(folder: Path) -> bool:
    return cache_dir().resolve() in folder.resolve().parents


def check_settings(folder: Path, wanted: dict) -> None:
    """Refuse to serve an index built with other settings than the config asks for."""
    built = read_meta(folder).get("settings", {})
    diff = {k: (built.get(k), v) for k, v in wanted.items() if built.get(k) != v}
    if diff:
        key, (have, want) = next(iter(diff.items()))
        raise ValueError(f"index {folder} was built with {key}={have!r} but the config asks for "
                         f"{want!r}; rebuild it (dynaprag index build) or use another index_dir")


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Hold the build lock of ``folder`` (a sibling ``.lock`` file); sweep dead builders' leftovers.

    Not re-entrant: a process that holds it must not take it again (it would wait for itself).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with locked(folder):
        sweep_stale_of(folder)
        if _in_cache(folder):
            sweep_legacy_of(folder)
            legacy_resume = folder.with_name(f".{folder.name}.building")
            if legacy_resume.is_dir():  # an earlier version's dense checkpoints; we hold the lock
                shutil.rmtree(legacy_resume, ignore_errors=True)
        yield


def building_dir(folder: Path, resume: bool = False) -> Path:
    """A marked temporary sibling to build into: ``.NAME.dynaprag-building-<pid>``, emptied first.

    With ``resume`` the name has no PID (``.NAME.dynaprag-building``) and its content is kept,
    so a killed build can reuse its checkpoints; only the holder of :func:`build_lock` may use it.
    """
    return temp_dir(folder, "building", resumable=resume)


def publish_dir(tmp: Path, folder: Path) -> None:
    """Swap the complete build ``tmp`` in as ``folder`` (replacing an older index there)."""
    if folder.exists():
        if not folder.is_dir() or (any(folder.iterdir()) and not is_index(folder)):
            raise FileExistsError(f"{folder} exists and is not a dynaprag index; choose another --index-dir")
        shutil.rmtree(folder)
    publish_temp_dir(tmp, folder)


def remove_index(folder: Path) -> None:
    """Delete the index ``folder`` for a rebuild, under its build lock; refuse a folder that is not one."""
    folder = Path(folder)
    if not folder.exists():
        return
    with build_lock(folder):
        if not folder.exists():
            return
        if not folder.is_dir() or (any(folder.iterdir()) and not is_index(folder)):
            raise FileExistsError(f"{folder} is not a dynaprag index (no dynaprag meta.json); not deleting it: "
                                  "choose another --index-dir")
        shutil.rmtree(folder)


@contextlib.contextmanager
def building(folder: Path) -> Iterator[Path]:
    """Build into a fresh :func:`building_dir`, published on success and removed on any failure."""
    tmp = building_dir(folder)
    try:
        yield tmp
        publish_dir(tmp, folder)
    finally:
        remove_temp_dir(tmp)
