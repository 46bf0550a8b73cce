"""LocalProcessLauncher with real replica processes (pointed at an etcd that is not there,
which they keep retrying): detached, adoptable by another launcher, killed without waiting,
and reaped."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from weir.etcd.records import ReplicaRecord
from weir.processes import kill, pid_runs, replica_pids
from weir.replica.local_launcher import LocalProcessLauncher
from weir.runtime_env import PreparedEnv

NO_ETCD = "127.0.0.1:1"


def wait_until(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def cluster_id() -> Iterator[str]:
    """A cluster id of this test; its replica processes are killed by PID at the end."""
    cluster = uuid.uuid4().hex[:12]
    yield cluster
    for pid in replica_pids(cluster):
        kill(pid)


def launch(launcher: LocalProcessLauncher, cluster_id: str) -> ReplicaRecord:
    record = ReplicaRecord(f"app#dep#{uuid.uuid4().hex[:6]}", "app", "dep", "v1", pid=0,
                           started_at=time.time(), cluster_id=cluster_id)
    return replace(record, pid=launcher.spawn(record, PreparedEnv()))


def test_a_replica_runs_detached_and_logs(tmp_path: Path, cluster_id: str) -> None:
    launcher = LocalProcessLauncher(NO_ETCD, str(tmp_path / "logs"), cluster_id)
    record = launch(launcher, cluster_id)
    assert launcher.is_alive(record)
    assert os.getsid(record.pid) == record.pid
    # Right after exec the kernel may show an empty command line for a moment.
    wait_until(lambda: replica_pids(cluster_id) == [record.pid])
    log = tmp_path / "logs" / f"replica-{record.replica_id.replace('#', '_')}.log"
    wait_until(lambda: "replica serving" in log.read_text())


def test_a_killed_child_is_reaped(tmp_path: Path, cluster_id: str) -> None:
    launcher = LocalProcessLauncher(NO_ETCD, str(tmp_path / "logs"), cluster_id)
    record = launch(launcher, cluster_id)
    launcher.kill_now(record)
    wait_until(lambda: not launcher.is_alive(record))
    # Reaped by the launcher's own calls, not left a zombie.
    wait_until(lambda: not launcher.is_alive(record) and not Path(f"/proc/{record.pid}").exists())


def test_another_launcher_adopts_and_kills_by_pid(tmp_path: Path, cluster_id: str) -> None:
    starter = LocalProcessLauncher(NO_ETCD, str(tmp_path / "logs"), cluster_id)
    record = launch(starter, cluster_id)
    adopter = LocalProcessLauncher(NO_ETCD, str(tmp_path / "logs"), cluster_id)
    wait_until(lambda: adopter.is_alive(record))  # once its command line shows
    # A PID now used by another process is not the replica.
    assert not adopter.is_alive(replace(record, replica_id="app#dep#other"))
    adopter.kill_now(replace(record, replica_id="app#dep#other"))
    assert pid_runs(record.pid)
    adopter.kill_now(record)
    wait_until(lambda: not adopter.is_alive(record))
    wait_until(lambda: not starter.is_alive(record) and not Path(f"/proc/{record.pid}").exists())
