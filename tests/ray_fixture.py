"""One local Ray cluster per test run, started the way a user's run starts it.

Registered from ``conftest.py`` (``pytest_plugins``). Tests that need Ray ask for
``ray_cluster``; the first one starts the cluster through :func:`dynaprag.cluster.ray_session`
(small-machine settings, a generous start-up wait, one retry), the last one's session end
stops it and removes its temporary folder. Code under test that calls ``ray_session`` itself
finds the cluster running and leaves it so, which is what a user's notebook would see too.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """The ``ray`` module, connected to this test run's local cluster (2 CPUs: 2 encoding actors)."""
    pytest.importorskip("ray", reason="Ray not installed (pip install 'dynaprag[ray]')")
    from dynaprag.cluster import ClusterConfig, ray_session

    with ray_session(ClusterConfig(num_cpus=2)) as ray:
        yield ray
