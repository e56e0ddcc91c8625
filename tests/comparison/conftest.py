"""Fixtures of the parity tests: the default model switched to eager attention.

The DRAGIN fixture was produced with ``attn_implementation="eager"`` (the only implementation
that returns attention weights); the shared session model is restored to its own
implementation afterwards because other tests use it.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def eager_lm(lm):
    """The session's SmolLM2-135M (float32) with eager attention for the module's duration."""
    model = lm.model
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield lm
    finally:
        model.set_attn_implementation(before)
