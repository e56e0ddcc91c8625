"""Shared benchmark plumbing: machine facts, git commit, and writing JSON + markdown results.

Every benchmark writes ``bench/results/NAME.json`` (command, git_commit, machine, model, dtype,
data, rows, run_note) and ``bench/results/NAME.md`` with the same rows as a table (DESIGN.md
convention). Nothing in a results file is written by hand: run conditions a script cannot see
(another process sharing the cores, say) go in ``--note TEXT`` (:func:`parse_args`), and a
resumable script whose rows come from several processes records the commit and dtype of each
row (``git_commits``, ``dtypes``) beside the top-level ``git_commit`` of the run that wrote the file.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from argparse import ArgumentParser, Namespace
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
#: Resumable runs append here; the folder is ignored by git (results, not checkpoints, are committed).
CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
SHARED_DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("DYNAPRAG_CACHE", str(ROOT / ".cache" / "dynaprag"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DEFAULT_MODEL = "smollm2-135m"


_RUN_NOTE = ""


def parse_args(ap: ArgumentParser, argv: Sequence[str] | None = None) -> Namespace:
    """``ap.parse_args`` plus ``--note TEXT``: the run conditions, written by :func:`write_results`
    into the JSON (``run_note``) and the table's notes, so no one edits a results file by hand."""
    global _RUN_NOTE
    if not any("--note" in action.option_strings for action in ap._actions):
        ap.add_argument("--note", default="", help="run conditions (other load on the machine, threads, why this "
                        "run), written into the results' notes")
    args = ap.parse_args(argv)
    _RUN_NOTE = args.note
    return args


def resolved_dtype(name: str = "auto") -> str:
    """The dtype a model loads in on this machine for ``name`` (``auto`` resolved), e.g. ``"bfloat16"``."""
    from dynaprag.lm.models import resolve_dtype

    return str(resolve_dtype(name)).removeprefix("torch.")


def load_questions(name: str, n: int) -> list[dict]:
    """The first ``n`` questions of ``../shared/data/questions/NAME.jsonl`` (read in place, never copied)."""
    out = []
    with (SHARED_DATA / "questions" / f"{name}.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line))
            if len(out) >= n:
                break
    return out


def result_name(base: str, model: str) -> str:
    """``base`` for the default model, ``base.<model>`` otherwise, so a run on another model
    (a quality comparison on 0.5B, say) never overwrites the default model's results."""
    if model == DEFAULT_MODEL:
        return base
    return f"{base}.{re.sub(r'[^A-Za-z0-9._-]+', '-', model).strip('-.')}"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        ram = 0.0
    import torch

    return {"cores": os.cpu_count(), "ram_gb": round(ram, 1), "cpu": cpu,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version()}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        # results a run is writing are not code: a resumed run that rewrites its table stays clean
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)bench/results"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's resident memory now (Linux ``/proc/self/statm``; else the peak so far)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return peak_rss_mb()
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssPeak:
    """The highest resident memory while a block runs, sampled by a thread every ``interval`` s.

    Why sampled: the kernel's peak (``ru_maxrss``) only grows over a process's life, so it cannot
    tell one case from the next when several batch sizes run in one process. ``before_mb`` is the
    RSS on entry and ``growth_mb`` the peak above it: what the block itself needed (KV caches,
    logits, activations), provided freed memory goes back to the system (big blocks are mmapped
    by glibc; ``MALLOC_MMAP_THRESHOLD_=65536`` makes smaller ones so too).
    """

    def __init__(self, interval: float = 0.02):
        self.interval, self.before_mb, self.peak_mb = interval, 0.0, 0.0

    def __enter__(self) -> "RssPeak":
        import threading

        self.before_mb = self.peak_mb = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb())

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.before_mb


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)\n"
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(k, "")) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def write_results(name: str, rows: list[dict[str, Any]], *, model: str, data: dict[str, Any],
                  notes: str = "", extra: dict[str, Any] | None = None, results_dir: Path | None = None,
                  group_by: str | None = None, dtype: str | None = None) -> Path:
    """Write ``bench/results/NAME.json`` and ``.md`` atomically; returns the JSON path.

    ``results_dir`` writes elsewhere (a smoke run that must not replace committed results);
    ``group_by`` names a row key: the markdown gets one table per value (rows of different
    shapes stay readable), the JSON keeps the one list of rows. ``dtype`` is the resolved
    dtype the model ran in (never ``auto``); the ``--note`` of :func:`parse_args` is appended
    to ``notes`` as the run conditions.
    """
    results = Path(results_dir) if results_dir is not None else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    if dtype == "auto":
        raise ValueError("write_results records the resolved dtype: pass resolved_dtype('auto')")
    payload = {"command": " ".join([Path(sys.executable).name] + sys.argv), "git_commit": git_commit(),
               "machine": machine(), "model": model, **({"dtype": dtype} if dtype else {}),
               "data": data, "rows": rows, **(extra or {})}
    if _RUN_NOTE:
        payload["run_note"] = _RUN_NOTE
        notes = f"{notes} Run conditions: {_RUN_NOTE}".strip()
    if notes:
        payload["notes"] = notes
    json_path = results / f"{name}.json"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, json_path)
    md = [f"# {name}", "", f"`{payload['command']}` at `{payload['git_commit']}` on "
          f"{payload['machine']['cores']} cores ({payload['machine']['cpu']}), model `{model}`"
          + (f" in {dtype}." if dtype else "."), ""]
    if notes:
        md += [notes, ""]
    if group_by is None:
        md.append(markdown_table(rows))
    for group in dict.fromkeys(row.get(group_by) for row in rows) if group_by else ():
        md += [f"## {group}", "", markdown_table([r for r in rows if r.get(group_by) == group])]
    md_path = results / f"{name}.md"
    tmp = md_path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(md))
    os.replace(tmp, md_path)
    return json_path
