"""Fixtures shared by every test folder: real etcd processes on loopback.

Each fixture starts its own etcd (a quarter of a second for one member), so a test may
kill or restart it freely; teardown stops every process and checks by PID that none
is left behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from weir.etcd.server import EtcdCluster, EtcdServer
from weir.processes import kill, pid_runs

# Each replica asks for 1 CPU (Ray's default), and the suite runs more replicas at once than
# CI's 2 cores: the nodes the tests start offer more (tests of placement set their own).
os.environ.setdefault("WEIR_NUM_CPUS", "64")


def _reap(pids: list[int]) -> None:
    """SIGKILL any of ``pids`` still alive; fail the test if one had to be."""
    leftovers = [pid for pid in pids if pid_runs(pid)]
    for pid in leftovers:
        kill(pid)
    assert not leftovers, f"etcd processes left running after stop(): {leftovers}"


@pytest.fixture
def etcd_server() -> Iterator[EtcdServer]:
    """A started single-member etcd, stopped and removed after the test."""
    server = EtcdServer()
    server.start()
    try:
        yield server
    finally:
        pids = [server.pid] if server.pid is not None else []
        server.stop()
        _reap(pids)
        assert not os.path.exists(server.data_dir)


@pytest.fixture
def etcd_cluster() -> Iterator[EtcdCluster]:
    """A started three-member etcd cluster, stopped and removed after the test."""
    cluster = EtcdCluster(3)
    cluster.start()
    try:
        yield cluster
    finally:
        pids = [m.pid for m in cluster.members if m.pid is not None]
        cluster.stop()
        _reap(pids)
        assert not any(os.path.exists(m.data_dir) for m in cluster.members)
