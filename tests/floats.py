"""The tolerance for float32 signals (log-probs, probabilities, entropies, attention, scores).

The model's signals, and the trigger scores computed from them, are float32: a 24-bit mantissa,
eps = 2**-23 ≈ 1.2e-7. A few float32 operations on values of order one leave an error of a few
eps *of the inputs*, so ``1 - p`` for p = 0.97 is 0.030000031, off by 1e-6 relative to the result.
``pytest.approx``'s default (rel 1e-6, abs 1e-12) is a float64 habit and fails on such values
depending on the release of torch or numpy that did the sums. Compare float32 signals with
:func:`approx32` (or ``rel=F32_REL, abs=F32_ABS`` in ``math.isclose``/``torch.allclose``); values
computed in Python floats keep the default.

Tests import it as ``from floats import approx32`` (``tests/`` is on ``sys.path`` through its
``conftest.py``).
"""
from __future__ import annotations

import pytest

F32_REL = 1e-5
"""About 80 float32 eps: a chain of float32 operations stays well inside it."""
F32_ABS = 1e-6
"""About 8 eps of a value of order one: covers cancellation such as ``1 - p`` near p = 1."""


def approx32(expected, *, rel: float = F32_REL, abs: float = F32_ABS):  # noqa: A002 (pytest.approx's names)
    """``pytest.approx`` with the float32 tolerance; works on numbers, lists and dicts of numbers."""
    return pytest.approx(expected, rel=rel, abs=abs)
