"""A run folder: one method on one dataset, resumable after a kill, refused when it is not ours.

A run folder holds

* ``config.json``: the fully resolved configuration (dataset, files, the pipeline's every knob);
* ``records.jsonl``: one record per question (prediction, gold, scores, the method's full trace
  with every retrieval's position, trigger scores, query and hit ids, token counts, forward
  passes, wall seconds, peak memory);
* ``summary.json``: averages over the records of the configured questions, rewritten
  atomically after every question.

Each record is appended as one complete line, then flushed and fsynced, so a run killed at any
moment leaves at most a torn last line. On restart the runner drops a torn line, skips the
question ids already recorded and continues: nothing is lost and nothing is duplicated. A
restart with a different configuration is refused (the keys that differ are named) unless only
``limit`` changed, which extends or shortens the run, ``batch_size`` (each record keeps the
size it was decoded at: in bfloat16 a batched answer may differ from batch 1's at a near-tie), or
the Ray workers (``ray``: :mod:`dynaprag.eval.distributed`, which writes through :func:`open_run`).
A shortened run keeps the records beyond its limit on disk (a later, longer run reuses them) but
its summary and report cover exactly the questions of its config; the summary's
``records_beyond_limit`` counts the ones left out.

Every file is written through :mod:`dynaprag.files` (``.NAME.dynaprag-tmp-<pid>`` then a rename),
and a run first removes the temporary files that dead dynaprag processes left in the folder, and
nothing else. A run folder is marked by a ``.dynaprag-run`` file; a non-empty folder without it
(and without an earlier version's run ``config.json``) is refused with a :class:`RunError`
unless the caller claims it on purpose (``claim_run_folder(out, adopt=True)``, the CLI's
``--out-nonempty-ok``): dynaprag then adds its files next to the user's and deletes none of them.

:func:`open_run` is the one way into a run folder: the single-process runner
(:func:`dynaprag.eval.runner.evaluate`) and the Ray driver (:mod:`dynaprag.eval.distributed`)
both append through it; what a record holds is :mod:`dynaprag.eval.records`.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from dynaprag.eval.datasets import Example
from dynaprag.eval.records import summarize
from dynaprag.files import atomic_write_json, atomic_write_text, sweep_legacy_of, sweep_stale
from dynaprag.jsonl_log import CorruptLogError, append_jsonl, read_jsonl

__all__ = ["CONFIG", "RECORDED_SINCE", "RECORDS", "RESUMABLE_KEYS", "RUN_MARKER", "SUMMARY", "OpenRun", "RunError",
           "claim_run_folder", "open_run", "read_records", "sweep_leftovers"]

RECORDS, SUMMARY, CONFIG = "records.jsonl", "summary.json", "config.json"
#: the file that marks a folder as a dynaprag run folder (so its leftovers may be swept)
RUN_MARKER = ".dynaprag-run"
#: config keys that may change between a run and its resumption (``ray``: the workers and their
#: resources, :mod:`dynaprag.eval.distributed`; how a run is spread is not what it computes)
RESUMABLE_KEYS = ("limit", "batch_size", "ray")
#: config keys (dotted for nested ones) that run folders written before them lack, with the value
#: those runs implicitly used (None: not known, any value is taken): added when such a run
#: resumes with that value. The loop's decoding budget was fixed at 4 before it became a setting;
#: every run decoded on transformers' forward before the fast decoder became a choice.
RECORDED_SINCE: dict[str, Any] = {"resolved_dtype": None, "pipeline.max_decoded_factor": 4.0,
                                  "pipeline.decoder": "eager", "pipeline.compile": False, "pipeline.quantize": "none"}


class RunError(RuntimeError):
    """A run folder that cannot be (re)used as asked; the message says why and what to do."""


def _earlier_run(run_dir: Path) -> bool:
    """True for a run folder of an earlier dynaprag (before :data:`RUN_MARKER`): its run ``config.json``."""
    try:
        config = json.loads((run_dir / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("pipeline"), dict) and "dataset" in config


def claim_run_folder(run_dir: str | Path, *, adopt: bool = False) -> Path:
    """Create or reuse ``run_dir`` as a run folder; refuse a non-empty folder that is not one.

    A folder is a run folder when it holds :data:`RUN_MARKER` (or an earlier version's run
    ``config.json``). ``adopt`` claims a non-empty other folder on purpose: the marker is
    added and the user's files stay untouched (a sweep removes only dynaprag's own names).
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir} is a file, not a folder; choose a new folder for the run")
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / RUN_MARKER).is_file():
        return run_dir
    entries = sorted(p.name for p in run_dir.iterdir())
    if entries and not adopt and not _earlier_run(run_dir):
        raise RunError(f"--out {run_dir} is not empty and not a dynaprag run folder ({len(entries)} entries, e.g. "
                       f"{entries[0]!r}); use a new or empty folder, or --out-nonempty-ok to add the run's files "
                       "to it (nothing in it is deleted)")
    atomic_write_text(run_dir / RUN_MARKER, "a dynaprag eval run folder (records.jsonl, summary.json, config.json)\n")
    return run_dir


def sweep_leftovers(run_dir: Path) -> list[Path]:
    """Remove temporary files of dead dynaprag writers from the run folder ``run_dir``; return them.

    Today's names (``.summary.json.dynaprag-tmp-<pid>``) and, for the run's own files only,
    those of earlier versions (``summary.json.tmp-<pid>``, ``.summary.json.tmp<pid>``).
    """
    removed = sweep_stale(run_dir)
    for name in (SUMMARY, CONFIG):
        removed += sweep_legacy_of(run_dir / name)
    return removed


def read_records(path: Path, *, repair: bool = False) -> list[dict]:
    """Records of a ``records.jsonl``: :func:`dynaprag.jsonl_log.read_jsonl` (a torn last line is
    dropped, and with ``repair`` cut off the file), with corruption before the end a :class:`RunError`."""
    try:
        return read_jsonl(path, repair=repair, require=("id",))
    except CorruptLogError as exc:
        raise RunError(f"corrupt record in the middle of the file: {exc}") from None


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Refuse a second runner on the same folder (two writers would interleave records)."""
    with open(run_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{run_dir} is in use by another dynaprag eval") from None
        yield


def _check_config(run_dir: Path, config: Mapping) -> None:
    path = run_dir / CONFIG
    if not path.exists():
        atomic_write_json(path, dict(config))
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: not a run config ({exc}); use a new --out folder") from None
    if not isinstance(old, dict):
        raise RunError(f"{path}: not a run config (not a JSON object); use a new --out folder")
    differing = _diff(old, json.loads(json.dumps(dict(config))))
    blocking = [k for k in differing if k.split(".", 1)[0] not in RESUMABLE_KEYS
                and not (k in RECORDED_SINCE and _lacks(old, k) and RECORDED_SINCE[k] in (None, _at(config, k)))]
    if blocking:
        raise RunError(f"{run_dir} holds a run with a different config ({', '.join(blocking)} differ); "
                       "use a new --out folder to run other settings")
    if differing:
        atomic_write_json(path, dict(config))


def _lacks(config: Mapping, dotted: str) -> bool:
    """Whether ``config`` has no value at the dotted key ``dotted`` (``"pipeline.max_decoded_factor"``)."""
    for part in dotted.split("."):
        if not isinstance(config, Mapping) or part not in config:
            return True
        config = config[part]
    return False


def _at(config: Mapping, dotted: str) -> Any:
    """The value at the dotted key ``dotted`` of ``config`` (None when absent)."""
    for part in dotted.split("."):
        config = config.get(part) if isinstance(config, Mapping) else None
    return config


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if a != b else []


class OpenRun:
    """A run folder opened by :func:`open_run`: its records so far, the questions still to do, and
    an appender that puts each new record on disk (one fsynced line) before it returns."""

    def __init__(self, run_dir: Path, examples: Sequence[Example], config: Mapping[str, Any], on_disk: list[dict],
                 handle) -> None:
        self.dir, self.config, self._handle = run_dir, config, handle
        wanted = {ex.id for ex in examples}
        self.records = [r for r in on_disk if r["id"] in wanted]
        self.beyond = len(on_disk) - len(self.records)
        done = {r["id"] for r in self.records}
        self.todo = [ex for ex in examples if ex.id not in done]

    def append(self, record: dict) -> None:
        """Append ``record`` (the next question of :attr:`todo` in question order) to ``records.jsonl``."""
        append_jsonl(self._handle, record)
        self.records.append(record)

    def summary(self) -> dict:
        """:func:`summarize` over the records of the opened questions."""
        return summarize(self.records, self.config, beyond_limit=self.beyond)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_json(self.dir / SUMMARY, dict(summary))


@contextlib.contextmanager
def open_run(run_dir: str | Path, examples: Sequence[Example], *, config: Mapping[str, Any],
             adopt: bool = False) -> Iterator[OpenRun]:
    """Open ``run_dir`` for appending the records of ``examples`` still to do; one writer at a time.

    Claims the folder (:func:`claim_run_folder`), takes its lock, sweeps dead writers' temporary
    files, checks ``config`` against the recorded one (refusing a different run), and cuts a torn
    last record off ``records.jsonl``. The single-process runner (:func:`evaluate`) and the Ray
    driver (:mod:`dynaprag.eval.distributed`) both write through it.
    """
    run_dir = claim_run_folder(run_dir, adopt=adopt)
    with _locked(run_dir):
        sweep_leftovers(run_dir)
        _check_config(run_dir, config)
        on_disk = read_records(run_dir / RECORDS, repair=True)
        with open(run_dir / RECORDS, "ab") as handle:
            yield OpenRun(run_dir, examples, config, on_disk, handle)
