"""Starting and joining Ray (``dynaprag.cluster``): real clusters, real failures, one-line errors.

A process holds one Ray connection, and this test run's is the session cluster
(``tests/ray_fixture.py``), so the starts and failed starts run in child processes.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray not installed (pip install 'dynaprag[ray]')")

from dynaprag.cluster import ClusterConfig, RayStartError, connect  # noqa: E402
from dynaprag.files import TEMP_MARKER, remove_temp_dir  # noqa: E402

# Run in a child: a start that cannot succeed (no time to start), then a real one; reports what
# was left after each (this process's children running from the folder, the folder's entries).
LIFECYCLE = r"""
import json, os, sys
from pathlib import Path
from dynaprag.cluster import ClusterConfig, RayStartError, ray_session

root = Path(sys.argv[1])

def strays():
    found = []
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == os.getpid() and str(root).encode() in (entry / "cmdline").read_bytes():
                found.append(entry.name)
        except (OSError, ValueError, IndexError):
            pass
    return found

report = {"pid": os.getpid()}
try:
    with ray_session(ClusterConfig(num_cpus=1, startup_timeout_s=0, temp_root=str(root))):
        report["started"] = True
except RayStartError as exc:
    report["error"] = str(exc)
    report["after_failure"] = {"strays": strays(), "entries": sorted(p.name for p in root.iterdir())}
with ray_session(ClusterConfig(num_cpus=1, temp_root=str(root))) as ray:
    report["worker_pid"] = ray.get(ray.remote(lambda: os.getpid()).remote())
    report["while_running"] = {"strays": strays(), "initialized": ray.is_initialized()}
report["after_stop"] = {"strays": strays(), "entries": sorted(p.name for p in root.iterdir()),
                        "initialized": ray.is_initialized()}
print(json.dumps(report))
"""


def dead_pid() -> int:
    """The PID of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.slow
def test_a_failed_start_leaves_no_process_and_a_started_cluster_leaves_nothing():
    root = Path(tempfile.mkdtemp(prefix="dpr", dir="/tmp"))  # short: Ray's sockets live under it
    stale = root / f".ray.dynaprag-tmp-{dead_pid()}"  # a killed run's folder
    (stale / "session_latest").mkdir(parents=True)
    (stale / TEMP_MARKER).write_text("")
    try:
        out = subprocess.run([sys.executable, "-c", LIFECYCLE, str(root)], capture_output=True, text=True,
                             timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        report = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)
    assert "started" not in report
    error = report["error"]
    assert "\n" not in error and error.startswith("a local Ray cluster did not start in 2 attempt(s) of up to 0 s (")
    assert "Timed out waiting for file" in error  # the failure, provoked on purpose
    assert "--ray-address" in error and "--ray-timeout" in error and "without Ray" in error
    assert report["after_failure"]["strays"] == []  # the failed start's GCS server was killed
    kept = re.search(r"logs in (\S+)\)", error).group(1)  # its logs are kept for the user
    assert report["after_failure"]["entries"] == [Path(kept).name] and stale.name not in kept
    assert report["while_running"]["initialized"] and report["worker_pid"] != report["pid"]
    assert report["while_running"]["strays"]  # the check above sees Ray's processes while they run
    assert report["after_stop"] == {"strays": [], "entries": [], "initialized": False}


def free_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no time to start", "nothing at the address"])
def test_encode_ray_that_cannot_start_says_so_in_one_line_with_exit_code_2(tmp_path, case):
    corpus = tmp_path / "passages.jsonl"
    corpus.write_text(json.dumps({"id": "p1", "title": "Vellum Bay", "text": "Vellum Bay is a bay in Norway."}) + "\n")
    flags = ["--ray-timeout", "0"] if case == "no time to start" else ["--ray-address", f"127.0.0.1:{free_port()}"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"COLUMNS": "1000"}
    out = subprocess.run([sys.executable, "-m", "dynaprag.cli", "encode", "--corpus", str(corpus), "--store",
                          str(tmp_path / "adapters"), "--ray", *flags], capture_output=True, text=True, env=env,
                         timeout=900)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, out.stderr[-3000:]
    if case == "no time to start":
        assert "a local Ray cluster did not start" in errors[0] and "--ray-address" in errors[0]
        remove_temp_dir(Path(re.search(r"logs in (\S+)\)", errors[0]).group(1)))
    else:
        assert f"no Ray cluster answers at 127.0.0.1:{flags[1].rsplit(':', 1)[1]}" in errors[0]
        assert "without Ray" in errors[0]


def test_a_temporary_folder_too_long_for_ray_sockets_is_refused_before_ray_starts(tmp_path):
    with pytest.raises(RayStartError, match="too long a path for Ray's unix sockets"):
        connect(ClusterConfig(temp_root=str(tmp_path / ("x" * 60))))
    assert [p.name for p in (tmp_path / ("x" * 60)).iterdir()] == []  # its folder is not left behind


@pytest.mark.parametrize("address, needle", [
    ("head-node", "not a Ray address"),
    ("ray://head-node", "not a Ray address"),
])
def test_an_address_that_is_not_one_is_refused_at_once(address, needle):
    with pytest.raises(RayStartError, match=needle):
        connect(ClusterConfig(address=address))
