"""Safe file handling shared by every layer: atomic writes, cross-process locks, leftover sweeps.

Why: a killed run must never leave a half-written result that a rerun trusts, two processes
that build the same cache (a converted model, an index) must not race, and a crash must not
leave gigabytes of temporary folders behind for good.

And dynaprag deletes only what it recognisably created. Every temporary name is hidden,
dynaprag's and its writer's: ``.NAME.dynaprag-<kind>-<pid>`` (:func:`tmp_name`), and a
temporary folder also holds the marker file ``.dynaprag-temp`` (:func:`temp_dir`). A sweep
removes an entry only when its name has that form, its PID is dead and, for a folder, the
marker is inside; :func:`sweep_stale` runs only in folders dynaprag owns (a run folder, the
cache), :func:`sweep_stale_of` anywhere, since it looks only at the temporary names of one
path dynaprag writes. Names of earlier versions (``NAME.tmp-<pid>``, ``.NAME.building-<pid>``)
look like a user's ``thesis.tmp-4242`` or ``site-staging-2019``; :func:`sweep_legacy_of`
removes them only for one named path in a folder dynaprag owns.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write_text(d / "a.txt", "hello")
>>> (d / "a.txt").read_text()
'hello'
>>> tmp_name(d / "a.txt").name.startswith(".a.txt.dynaprag-tmp-")
True
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

#: the file inside every temporary folder dynaprag creates: a sweep removes no folder without it
TEMP_MARKER = ".dynaprag-temp"
_KINDS = "tmp|building|partial|staging"
_OURS = re.compile(rf"\..+\.dynaprag-(?:{_KINDS})-(\d+)")


def cache_dir() -> Path:
    """``$DYNAPRAG_CACHE``, else the platform's user cache folder: where every layer keeps what it
    builds once and reuses (converted models, indexes, adapters, translators). One function, so
    the model loader, the index builder and the adapter store never disagree on the folder."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("DYNAPRAG_CACHE") or user_cache_dir("dynaprag"))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file, read ``chunk`` bytes at a time (a model file never sits in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tmp_name(path: Path, kind: str = "tmp") -> Path:
    """A hidden sibling of ``path`` that only this process writes: ``.NAME.dynaprag-<kind>-<pid>``."""
    return path.with_name(f".{path.name}.dynaprag-{kind}-{os.getpid()}")


def temp_dir(path: Path, kind: str = "staging", *, resumable: bool = False) -> Path:
    """Create the temporary folder that becomes ``path``, with :data:`TEMP_MARKER` inside.

    Its name is :func:`tmp_name`'s, emptied first (only of a folder dynaprag marked). With
    ``resumable`` the name has no PID (``.NAME.dynaprag-<kind>``) and the content is kept,
    for a caller that holds ``path``'s lock and resumes a killed writer's work.
    """
    tmp = path.with_name(f".{path.name}.dynaprag-{kind}") if resumable else tmp_name(path, kind)
    if not resumable:
        remove_temp_dir(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / TEMP_MARKER).write_text("a temporary folder of dynaprag: removed when its writer is gone\n")
    return tmp


def remove_temp_dir(tmp: Path) -> None:
    """Remove a folder made by :func:`temp_dir`; a folder without the marker is left alone."""
    if (tmp / TEMP_MARKER).is_file() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)


def publish_temp_dir(tmp: Path, path: Path) -> None:
    """Rename the complete temporary folder ``tmp`` to ``path`` (absent) and drop its marker."""
    os.replace(tmp, path)
    (path / TEMP_MARKER).unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """:func:`atomic_write_text` of indented JSON with a trailing newline."""
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def locked(path: str | Path, timeout: float = -1) -> Iterator[None]:
    """Hold an exclusive cross-process lock named after ``path`` (``path.lock``) while inside.

    Two processes that would build the same cache serialise here; the second then finds the
    first one's result and reuses it instead of building it again.
    """
    from filelock import FileLock

    lock_path = Path(str(path) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path), timeout=timeout):
        yield


def pid_alive(pid: int) -> bool:
    """True when a process with this PID exists (ours included)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(folder: str | Path) -> list[Path]:
    """Remove dead writers' temporary files and folders from ``folder``, a folder dynaprag owns.

    Only names of the form ``.NAME.dynaprag-<kind>-<pid>`` with a dead PID are removed, and a
    folder only when it holds :data:`TEMP_MARKER`; a live writer's are left alone.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return _remove_dead(folder, _OURS.fullmatch)


def sweep_stale_of(path: str | Path) -> list[Path]:
    """:func:`sweep_stale` limited to the temporary names of the one file or folder ``path``.

    Safe in a folder the user owns (the parent of an ``--index-dir``): it looks only at
    ``.NAME.dynaprag-<kind>-<pid>`` for this ``NAME``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    own = re.compile(rf"\.{re.escape(path.name)}\.dynaprag-(?:{_KINDS})-(\d+)")
    return _remove_dead(path.parent, own.fullmatch)


def sweep_legacy_of(path: str | Path) -> list[Path]:
    """Remove what an earlier dynaprag left for ``path``: ``NAME.<kind>-<pid>``, ``.NAME.<kind>-<pid>``
    and ``.NAME.tmp<pid>`` of dead PIDs.

    Those names carry no dynaprag mark, so call this only where ``path``'s folder is
    dynaprag's own (the model cache, a run folder, an adapter store), never in a user's folder.
    """
    path = Path(path)
    return sweep_legacy(path.parent, re.escape(path.name))


def sweep_legacy(folder: str | Path, names: str) -> list[Path]:
    """:func:`sweep_legacy_of` for every file whose ``NAME`` matches the regular expression ``names``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    old = re.compile(rf"(?:\.?(?:{names})[.-](?:{_KINDS})-|\.(?:{names})\.tmp)(\d+)")
    return _remove_dead(folder, old.fullmatch, need_marker=False)


def _remove_dead(folder: Path, match: Callable, need_marker: bool = True) -> list[Path]:
    """Remove the entries of ``folder`` whose name ``match``es with the PID of a dead process."""
    removed: list[Path] = []
    for entry in folder.iterdir():
        m = match(entry.name)
        if not m or pid_alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            if need_marker and not (entry / TEMP_MARKER).is_file():
                continue
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed
