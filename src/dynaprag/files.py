"""Safe file handling shared by every layer: atomic writes, cross-process locks, leftover sweeps.

Why: a killed run must never leave a half-written result that a rerun trusts, two processes
that build the same cache (a converted model, an index) must not race, and a crash must not
leave gigabytes of temporary folders behind for good. Every temporary name carries the
writer's PID (``NAME.tmp-<pid>``, ``.NAME.building-<pid>``), so the next run can tell a live
writer's files from a dead one's and remove only the latter (:func:`sweep_stale`).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write_text(d / "a.txt", "hello")
>>> (d / "a.txt").read_text()
'hello'
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

_PID_SUFFIX = re.compile(r"[.-](?:tmp|building|partial|staging)-(\d+)$")


def tmp_name(path: Path, kind: str = "tmp") -> Path:
    """A sibling of ``path`` that only this process writes: ``NAME.<kind>-<pid>``."""
    return path.with_name(f"{path.name}.{kind}-{os.getpid()}")


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
    """Remove temporary files and folders in ``folder`` whose writer PID is dead; return them.

    Matches names ending in ``.tmp-<pid>``, ``.building-<pid>``, ``.partial-<pid>`` or
    ``.staging-<pid>`` (also with ``-`` before the kind). Files of live writers are left alone.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return _remove_dead(folder, _PID_SUFFIX.search)


def sweep_stale_of(path: str | Path) -> list[Path]:
    """:func:`sweep_stale` limited to the leftovers of one file or folder ``path``; return them.

    Matches ``NAME.<kind>-<pid>`` and ``.NAME.<kind>-<pid>`` next to ``path`` only, so it is
    safe in a folder the user owns (an ``--index-dir`` in their home), where other files
    with PID-like names are none of our business.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    own = re.compile(rf"\.?{re.escape(path.name)}[.-](?:tmp|building|partial|staging)-(\d+)")
    return _remove_dead(path.parent, own.fullmatch)


def _remove_dead(folder: Path, match) -> list[Path]:
    """Remove the entries of ``folder`` whose name ``match``es with the PID of a dead process."""
    removed: list[Path] = []
    for entry in folder.iterdir():
        m = match(entry.name)
        if not m or pid_alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed
