"""What the scale benchmarks (``scale.py``, ``scale_dense.py``, ``scale_lucene.py``) share.

Why these helpers: a build at 21M passages runs for hours and is killed now and then, so each case
runs in a child process (its peak RSS is its own, not the parent's high-water mark) and its result
is checkpointed as one JSON file under the cache once it finishes; a rerun skips finished cases.
Sizes are written the way the docs speak of them (``100k``, ``21M``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable


def parse_size(text: str) -> int:
    """``"100k"`` -> 100000, ``"2.5M"`` -> 2500000, ``"500"`` -> 500."""
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def label(n: int) -> str:
    """The inverse of :func:`parse_size` for round sizes: 21000000 -> ``"21M"``."""
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def work_dir(bench: str) -> Path:
    """``$DYNAPRAG_CACHE/bench/BENCH``: big generated files never go into the repository."""
    folder = Path(os.environ["DYNAPRAG_CACHE"]) / "bench" / bench
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_child(script: str, case: str, *args: str) -> dict[str, Any]:
    """Run ``script --case CASE ARGS`` in a fresh interpreter; its last stdout line is the result."""
    proc = subprocess.run([sys.executable, script, "--case", case, *args], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"{case} {' '.join(args)} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def checkpointed(folder: Path, name: str, force: bool, compute: Callable[[], dict]) -> dict:
    """``folder/NAME.json`` if a previous run finished this case (and not ``force``), else compute
    it and write it atomically, so a kill mid-write never leaves a half checkpoint."""
    path = folder / f"{name}.json"
    if path.is_file() and not force:
        print(f"{name}: checkpointed ({path})", flush=True)
        return json.loads(path.read_text())
    print(f"{name}: running", flush=True)
    result = compute()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)
    return result
