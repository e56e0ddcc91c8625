"""The one place dynaprag starts or joins a Ray cluster (``encode --ray``, the benchmarks, the tests).

Why one place: Ray's defaults suit a dedicated server, not a busy 2-core laptop. Its head
node must write the GCS port file within 30 s and its raylet register within 10 s, so on a
loaded machine ``ray.init()`` fails with ``Timed out waiting for file .../gcs_server_port_...``;
its workers run at nice 15 behind everything else; it starts a dashboard, floods the driver
with worker logs and leaves ``/tmp/ray/session_*`` behind for good. :func:`ray_session`
starts a local cluster with settings fit for a small machine instead:

* no dashboard, no worker logs on the driver, Ray's own logging at WARNING;
* ``num_cpus`` CPUs (the actors we mean to run, not every core), a 512 MiB object store
  (adapters and records are small), workers at nice 0 (they are the job);
* a start-up budget of ``startup_timeout_s`` (default 120 s) for the GCS port file
  (``RAY_gcs_server_port_wait_time_s``, read by Ray's Python side), the raylet's
  registration (``raylet_start_wait_time_s``) and a worker's (``worker_register_timeout_seconds``);
  two waits stay fixed in Ray 2.60 (30 s for the node to appear in the GCS, 15 s for the
  agents' port files, ray-project/ray#65983), so a failed start is retried once;
* a temporary folder of its own, ``/tmp/.ray.dynaprag-tmp-<pid>`` (short: Ray's unix sockets
  live inside and a socket path may not exceed 107 bytes, 103 on macOS), removed when the cluster
  stops; a killed run's folder is swept by the next start. A start that fails for good kills
  the processes it left and keeps that folder's logs for the error message to point at.

Joining a running cluster (``address``: ``auto``, ``HOST:PORT`` or ``ray://HOST:10001``) first
checks that something answers there, since Ray itself retries a dead address for minutes.
Every failure is a :class:`RayStartError` whose message is one line saying what to try.

>>> ClusterConfig(num_cpus=2).startup_timeout_s
120
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from dynaprag.files import remove_temp_dir, sweep_stale_of, temp_dir

#: environment variables a worker needs to find dynaprag's models and caches as the driver does
FORWARDED_ENV = ("DYNAPRAG_CACHE", "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM", "HF_HOME")
#: the longest socket path Ray makes in its folder, less its PID: /session_<date>_<time>_<us>_<pid>/sockets/plasma_store
_SOCKET_SUFFIX = len("/session_2026-12-07_19-50-09_092535_/sockets/plasma_store")
_SOCKET_LIMIT = 103 if sys.platform == "darwin" else 107
_HINT = ("try the address of a running cluster (--ray-address; `ray start --head` prints it), a longer wait "
         "(--ray-timeout), or run without Ray")


class RayStartError(RuntimeError):
    """Ray could not be started or joined; the message is one line that says what to try."""


@dataclass
class ClusterConfig:
    """Which cluster to use and, for a local one, how to start it."""

    address: str | None = field(default=None, metadata={
        "help": "a running cluster (auto, HOST:PORT, ray://HOST:10001); None = start a local one"})
    num_cpus: int | None = field(default=None, metadata={"help": "CPUs a local cluster offers (None = every core)"})
    startup_timeout_s: int = field(default=120, metadata={
        "help": "seconds a local start may take per attempt (Ray's own waits are 10-30 s)"})
    attempts: int = field(default=2, metadata={"help": "local start attempts (Ray's fixed waits can still expire)"})
    object_store_mb: int = field(default=512, metadata={"help": "a local cluster's object store (MiB)"})
    worker_niceness: int = field(default=0, metadata={"help": "nice value added to workers (Ray's default: 15)"})
    temp_root: str | None = field(default=None, metadata={
        "help": "folder for the cluster's temporary folder (None = /tmp); keep it short: sockets live there"})


def import_ray():
    """The ``ray`` module, or a :class:`RayStartError` that says how to install it."""
    try:
        import ray
    except ImportError:  # pragma: no cover - depends on the environment
        raise RayStartError("Ray is not installed: pip install 'dynaprag[ray]' (or run without Ray)") from None
    return ray


@contextlib.contextmanager
def ray_session(config: ClusterConfig | None = None) -> Iterator[object]:
    """Ray, connected for the duration of the block; yields the ``ray`` module.

    A process already connected (a notebook's ``ray.init()``, the tests' session cluster) keeps
    its cluster: nothing is started and nothing stopped. Otherwise the cluster of ``config``
    is joined or started, and left (a local one stopped, its folder removed) on exit.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    folder = connect(config or ClusterConfig())
    try:
        yield ray
    finally:
        disconnect(folder)


def connect(config: ClusterConfig) -> Path | None:
    """Join ``config.address`` or start a local cluster; the local cluster's folder (None when joined)."""
    ray = import_ray()
    env = {"env_vars": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}}
    if config.address and config.address != "local":
        _probe(config.address)
        try:
            ray.init(address=config.address, runtime_env=env, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as exc:
            ray.shutdown()
            raise RayStartError(f"could not join the Ray cluster at {config.address} ({_first_line(exc)}); "
                                f"check the address, or run without Ray") from exc
        return None
    return _start_local(ray, config, env)


def disconnect(folder: Path | None) -> None:
    """Leave the cluster; a local one (``folder`` from :func:`connect`) is stopped and its folder removed."""
    import_ray().shutdown()
    if folder is not None:
        _stop_strays(folder)
        remove_temp_dir(folder)


def _start_local(ray, config: ClusterConfig, env: dict) -> Path:
    """Start a local cluster, retried once; its folder, or a :class:`RayStartError`."""
    base = Path(config.temp_root or ("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir())) / "ray"
    longest = _SOCKET_LIMIT - _SOCKET_SUFFIX - len(str(os.getpid()))
    sweep_stale_of(base)  # what a killed run left
    system = {"raylet_start_wait_time_s": config.startup_timeout_s,
              "worker_register_timeout_seconds": max(60, config.startup_timeout_s),
              "worker_niceness": config.worker_niceness}
    error: BaseException | None = None
    attempts = max(1, config.attempts)
    for _ in range(attempts):
        folder = temp_dir(base, "tmp")
        if len(str(folder).encode()) > longest:
            remove_temp_dir(folder)
            raise RayStartError(f"{folder}: too long a path for Ray's unix sockets (at most {longest} "
                                f"bytes); choose a shorter temp_root")
        try:
            with _environ(RAY_gcs_server_port_wait_time_s=str(config.startup_timeout_s)):
                ray.init(address="local", num_cpus=config.num_cpus, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING, object_store_memory=config.object_store_mb * 2**20,
                         runtime_env=env, _temp_dir=str(folder), _system_config=dict(system))  # Ray adds to it
            return folder
        except BaseException as exc:  # a KeyboardInterrupt too: no process may outlive a failed start
            ray.shutdown()
            _stop_strays(folder)
            if not isinstance(exc, Exception):
                remove_temp_dir(folder)
                raise
            error = exc
    raise RayStartError(f"a local Ray cluster did not start in {attempts} attempt(s) of up to "
                        f"{config.startup_timeout_s} s ({_first_line(error)}; logs in {folder}); {_HINT}") from error


def _probe(address: str) -> None:
    """Fail at once when nothing listens at ``address`` (Ray would retry it for minutes)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RayStartError(f"{address}: not a Ray address (auto, HOST:PORT or ray://HOST:PORT)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise RayStartError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); check the address "
                            f"(`ray status` on the head node), or run without Ray") from None


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables while inside (Ray reads some of its waits from the environment only)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _stop_strays(folder: Path) -> None:
    """Kill this process's children that run from ``folder`` and wait until they are gone (a failed
    ``ray.init`` leaves its GCS server running, and Ray's processes share our fate, so they would
    live as long as we do)."""
    proc, me, mark = Path("/proc"), os.getpid(), str(folder).encode()
    if not proc.is_dir():  # pragma: no cover - not Linux: they end with this process
        return
    strays = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == me and mark in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
                strays.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    deadline = time.monotonic() + 30  # a loaded machine takes a moment to tear a process down
    for pid in strays:
        with contextlib.suppress(ChildProcessError):  # reaped already (by Ray's Popen)
            while not os.waitpid(pid, os.WNOHANG)[0] and time.monotonic() < deadline:
                time.sleep(0.05)


def _first_line(exc: BaseException | None) -> str:
    """The first line of an exception's message, its paths cut to their last part (``.../NAME``):
    the error names the folder of Ray's logs once, and the details are in those logs."""
    text = re.sub(r"(?:/[^/\s]+)+/", ".../", (str(exc).strip().splitlines() or [type(exc).__name__])[0])
    return text if len(text) <= 160 else text[:157] + "..."
