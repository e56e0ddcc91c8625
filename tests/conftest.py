"""Shared fixtures: the real default model (loaded once per session) and paths.

Tests run the real SmolLM2-135M and real retrievers on small fixtures the project writes;
golden tests read ``../shared/data`` and skip with a message when it is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("DYNAPRAG_CACHE", str(ROOT / ".cache" / "dynaprag"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
pytest_plugins = ["ray_fixture"]  # the session-wide Ray cluster (tests/ray_fixture.py)


@pytest.fixture(scope="session")
def lm():
    """The default model in float32 (exact comparisons need it)."""
    from dynaprag.lm import load_model

    return load_model("smollm2-135m", dtype="float32")


@pytest.fixture(scope="session")
def generator(lm):
    from dynaprag.lm import Generator

    return Generator(lm)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "questions").is_dir():
        pytest.skip(f"real evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module that trains: on a shared, oversubscribed 2-core machine extra
    OpenMP threads only spin. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
