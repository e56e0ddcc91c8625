"""The ``--ray`` flags that ``dynaprag eval`` and ``dynaprag reproduce`` share, and their checks.

``--ray`` starts a local cluster for the run, or joins ``--ray-address`` (``auto``, ``HOST:PORT``,
``ray://HOST:10001``; also read from ``RAY_ADDRESS``), as ``dynaprag encode --ray`` does.
The other flags size the workers (:class:`dynaprag.eval.distributed.RayEvalConfig`).
"""
from __future__ import annotations

from typing import Optional

import typer

RAY = typer.Option(False, "--ray", help="answer on Ray workers (a local cluster for the run unless --ray-address); "
                                        "the run folder is the same as without it")
RAY_ADDRESS = typer.Option(None, "--ray-address", envvar="RAY_ADDRESS",
                           help="with --ray: a running cluster (auto, HOST:PORT, ray://HOST:10001)")
WORKERS = typer.Option(None, "--workers", min=1, help="with --ray: model replicas (default: as many as the "
                                                      "cluster's CPUs, or GPUs, allow)")
THREADS = typer.Option(None, "--threads-per-worker", min=1, help="with --ray: CPUs (torch threads) per worker "
                                                                  "(default 1)")
GPUS = typer.Option(None, "--gpus-per-worker", min=0.0, help="with --ray: GPUs per worker (default 0); the model "
                                                              "runs on cuda")
SHARD_SIZE = typer.Option(None, "--shard-size", min=1, help="with --ray: questions per shard (default: twice the "
                                                            "batch size)")
RAY_TIMEOUT = typer.Option(None, "--ray-timeout", min=1, help="with --ray: seconds a local cluster may take to "
                                                              "start (default 120)")


def ray_config(ray: bool, address: Optional[str], workers: Optional[int], threads: Optional[int],
               gpus: Optional[float], shard_size: Optional[int], timeout: Optional[int]):
    """The :class:`~dynaprag.eval.distributed.RayEvalConfig` the flags ask for; None without ``--ray``.

    A sizing flag without ``--ray`` is a mistake (the run would silently use one process), so it
    is refused with a ``ValueError`` naming the flag.
    """
    if not ray:
        given = [name for name, value in (("--workers", workers), ("--threads-per-worker", threads),
                                          ("--gpus-per-worker", gpus), ("--shard-size", shard_size),
                                          ("--ray-timeout", timeout)) if value is not None]
        if given:
            raise ValueError(f"{given[0]} needs --ray (it sizes the Ray workers); add --ray, or drop {given[0]}")
        return None
    from dynaprag.eval.distributed import RayEvalConfig

    return RayEvalConfig(address=address or None, workers=workers, threads_per_worker=threads or 1,
                         gpus_per_worker=gpus or 0.0, shard_size=shard_size, startup_timeout_s=timeout or 120)
