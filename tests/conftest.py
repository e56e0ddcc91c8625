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
def demo_pipeline(lm):
    """``demo_pipeline(method)``: that preset's float32 pipeline over the packaged demo corpus, built
    on first use and kept for the run (one BM25 index for all presets). The recorded-trace replay and
    the batch-8 check run the same presets; callers pass ``max_new_tokens`` per answer."""
    from dynaprag.pipeline import Pipeline, PipelineConfig

    made: dict = {}

    def get(method: str):
        if method not in made:
            retriever = next(iter(made.values())).retriever if made else None
            made[method] = Pipeline.from_config(PipelineConfig(method=method, dtype="float32"), lm=lm,
                                                retriever=retriever)
        return made[method]
    return get


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


def pytest_collection_modifyitems(config, items):
    """Work units for ``pytest -n 2 --dist loadgroup`` (``make test``): a module's tests run on one
    worker, so a module fixture (an encoded store, a server, evaluated runs) is built once and tests
    that share module state stay together; the Ray tests (the ``ray_cluster`` fixture or ``ray`` in
    the file name) run on one worker, so two workers never start Ray clusters side by side on a small
    machine. A module whose tests share nothing but session fixtures sets ``XDIST_PER_TEST = True``
    and its tests spread one by one (the costly batch-8 check)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if "ray_cluster" in item.fixturenames or "ray" in item.path.stem.split("_"):
            group = "ray"
        elif getattr(getattr(item, "module", None), "XDIST_PER_TEST", False):
            continue
        else:
            group = item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
