"""How the decode step is compiled: inductor settings that work on CPU, and the on-disk cache.

The compiled artefacts (generated C++ and its shared objects, the FX graph cache, the
AOTAutograd cache) live under ``<dynaprag cache>/inductor`` (:func:`inductor_cache_dir`), so a
second process with the same model, batch and length bucket loads them instead of compiling:
it still re-traces the Python (dynamo, a few seconds), but skips code generation and the C++
compiler, which are most of the first compile (``bench/results/generator.md``: ``compile_s``).
A ``TORCHINDUCTOR_CACHE_DIR`` the user set wins.

Inductor's defaults are kept (no ``freezing``): freezing would fold the weights into the
graph as constants (and pre-pack bf16 copies for oneDNN, doubling their memory), so an
adapter merged into the weights in place would silently not be seen; a microbenchmark here put
oneDNN's pre-packed bf16 product at ~1.5x plain ``mm`` for one row, less than int8/int4 give.
Graph inputs are the weights themselves, so in-place edits are seen by the compiled step.

On CUDA the same switch would add CUDA graphs (``mode="reduce-overhead"``): the static cache
and fixed bucket shapes are exactly what graph capture needs (no allocation, no shape change
between replays). This machine has no GPU, so that path is documented, not tested.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch


def inductor_cache_dir() -> Path:
    """``$TORCHINDUCTOR_CACHE_DIR`` if the user set it, else ``<dynaprag cache>/inductor`` (set for this process).

    torch writes its own default (``/tmp/torchinductor_<user>``) into the variable the first
    time anything asks for the cache folder, so that value counts as unset.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen and os.path.abspath(chosen) != os.path.abspath(default_cache_dir()):
        return Path(chosen)
    from dynaprag.files import cache_dir

    path = cache_dir() / "inductor"
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


def configure(recompile_limit: int = 64) -> None:
    """Process-wide settings the compiled step relies on (idempotent).

    One graph per (batch, length bucket, attention read or not) is expected, so dynamo's
    default limit of 8 graphs per function would fall back to eager on long answers.
    """
    inductor_cache_dir()
    import torch._dynamo
    import torch._inductor.config as inductor

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, recompile_limit)
    torch._dynamo.config.accumulated_recompile_limit = max(
        torch._dynamo.config.accumulated_recompile_limit, 4 * recompile_limit)
    inductor.fx_graph_cache = True


def compile_module(module: torch.nn.Module, mode: str | None = None, options: dict | None = None):
    """``torch.compile`` of ``module`` with static shapes (each bucket its own graph)."""
    configure()
    device = next(module.buffers()).device
    if device.type == "cuda" and mode is None:
        mode = "reduce-overhead"  # CUDA graphs: a static cache and fixed shapes replay without launches
    how = {"options": options} if options else {"mode": mode}  # torch.compile takes one or the other
    return torch.compile(module, dynamic=False, fullgraph=True, **how)
