"""Access to the golden fixtures: ``../shared/parity/`` and the whole-loop ``fixtures/loop_<preset>.json``
(both produced by the reference code itself).

Tests are parametrised over the fixture's cases at collection time; when the directory is
absent (a checkout without the shared folder) each test collects as one skipped case that
says where the fixtures were expected. With the ``CI`` environment variable set, such a skip
is a failure instead (``conftest.py``): CI must never stay green by not running the parity suite.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

PARITY = Path(__file__).resolve().parents[2].parent / "shared" / "parity"
LOOP_FIXTURES = Path(__file__).resolve().parent / "fixtures"
"""``loop_<preset>.json``: a reference loop's own steps on the demo questions (``scripts/parity``)."""
MISSING = "parity fixture not found"
"""How every skip for an absent fixture begins; under ``CI`` such a skip fails (``conftest.py``)."""
REL = 1e-4
"""Relative tolerance for floats (issue 13); decisions, positions and strings compare exactly."""


def load(name: str) -> dict:
    """The parsed fixture ``name`` (e.g. ``"dragin.json"``); skips the calling test if absent."""
    if not (PARITY / name).is_file():
        pytest.skip(f"{MISSING}: {PARITY / name}")
    return _read(name)


@lru_cache(maxsize=None)
def _read(name: str) -> dict:
    return json.loads((PARITY / name).read_text(encoding="utf-8"))


def params(name: str, select: Callable[[dict], list[Any]], ident: Callable[[Any], str]) -> list:
    """``pytest.param`` per item of ``select(fixture)``, or one skipped param if it is absent."""
    if not (PARITY / name).is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{MISSING}: {PARITY / name}"))]
    return [pytest.param(item, id=ident(item)) for item in select(_read(name))]


def assert_close(actual: Sequence[float], expected: Sequence[float], rel: float = REL, what: str = "") -> None:
    """Element-wise ``|a - e| <= rel · |e|`` (NaN equals NaN), with the first offending index."""
    actual, expected = list(actual), list(expected)
    assert len(actual) == len(expected), f"{what}: length {len(actual)} != {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        if e is None or (isinstance(e, float) and math.isnan(e)):
            assert a is None or math.isnan(a), f"{what}[{i}]: {a} != NaN"
            continue
        assert abs(a - e) <= rel * abs(e), f"{what}[{i}]: {a} != {e} (rel {rel})"


def loop_fixture(preset: str) -> dict:
    """The whole-loop fixture of ``preset`` (``"iter-retgen"`` reads ``loop_iter_retgen.json``)."""
    return json.loads((LOOP_FIXTURES / f"loop_{preset.replace('-', '_')}.json").read_text(encoding="utf-8"))


def collapse(text: str | None) -> str:
    """``text`` with its whitespace collapsed to single spaces (the reference loops re-join their pieces)."""
    return " ".join((text or "").split())


def questions_at(refs: Sequence[dict], batch: int, at_batch_1: Sequence[str] | None = None) -> list[dict]:
    """The fixture questions answered at ``batch``: all at a batch size above 1, ``at_batch_1`` (ids;
    ``None``: all) at batch 1. The batched path then sees every question in a real mixed batch, the
    unbatched one a few chosen to meet the preset's kinds of steps and named deviations."""
    return [r for r in refs if batch > 1 or at_batch_1 is None or r["id"] in at_batch_1]


def assert_loops_match(refs: Sequence[dict], compare: Callable[[dict], list[str]], allowed: set[str]) -> dict:
    """Compare our answer to each reference question: ``compare(ref)`` asserts every compared step
    and returns the named deviations it met; only ``allowed`` ones may be met. Returns them per id."""
    met = {ref["id"]: compare(ref) for ref in refs}
    assert {d for ds in met.values() for d in ds} <= allowed, met
    return met
