"""Access to the golden fixtures in ``../shared/parity/`` (produced by the reference code itself).

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
