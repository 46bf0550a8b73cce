"""LocalProcessLauncher with real replica processes (pointed at an etcd that is not there,
which they keep retrying): detached, adoptable by another launcher, killed without waiting,
and reaped."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from weir.etcd.records import ReplicaRecord
from weir.processes import kill, pid_runs, replica_pids, spare_pids
from weir.replica.local_launcher import (
    SPARE_AFTER_HANDOUT_S,
    SPARE_KEEP_S,
    LocalProcessLauncher,
    spare_plan,
)
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
    for pid in replica_pids(cluster) + spare_pids(cluster):
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


def test_the_spare_plan_keeps_one_for_a_while_and_not_right_after_a_hand_out() -> None:
    assert spare_plan(False, 0.0, 0.0, None) == "start"
    assert spare_plan(True, SPARE_KEEP_S - 1, 0.0, None) is None
    assert spare_plan(True, SPARE_KEEP_S, 0.0, None) == "let go"
    assert spare_plan(False, SPARE_KEEP_S + 1, 0.0, None) is None  # not again once let go
    handed = 100.0  # a hand-out restarts the window, after a pause
    assert spare_plan(False, handed + 0.1, handed, handed) is None
    assert spare_plan(False, handed + SPARE_AFTER_HANDOUT_S, handed, handed) == "start"
    assert spare_plan(True, handed + SPARE_KEEP_S, handed, handed) == "let go"


def with_spare(tmp_path: Path, cluster_id: str) -> tuple[LocalProcessLauncher, int]:
    """A launcher that keeps a warm spare, and the spare's PID once it shows."""
    launcher = LocalProcessLauncher(NO_ETCD, str(tmp_path / "logs"), cluster_id,
                                    keep_spare=True)
    launcher.tend_spare()
    wait_until(lambda: len(spare_pids(cluster_id)) == 1)
    return launcher, spare_pids(cluster_id)[0]


def test_a_replica_handed_to_the_warm_spare_runs_logs_and_is_adopted(
        tmp_path: Path, cluster_id: str) -> None:
    launcher, spare = with_spare(tmp_path, cluster_id)
    assert replica_pids(cluster_id) == []
    record = launch(launcher, cluster_id)
    assert record.pid == spare
    assert os.getsid(record.pid) == record.pid  # detached, as a cold one
    wait_until(lambda: replica_pids(cluster_id) == [record.pid] and not spare_pids(cluster_id))
    log = tmp_path / "logs" / f"replica-{record.replica_id.replace('#', '_')}.log"
    wait_until(lambda: log.exists() and "replica serving" in log.read_text())
    assert record.replica_id in log.read_text()  # it runs the assigned arguments
    launcher.tend_spare()  # right after a hand-out: no new spare yet
    assert spare_pids(cluster_id) == []
    # Another launcher (an agent restarted) adopts it by its mark, not its command line.
    adopter = LocalProcessLauncher(NO_ETCD, str(tmp_path / "logs"), cluster_id)
    assert not pid_runs(record.pid, record.replica_id)
    assert asyncio.run(adopter.adopt({record.replica_id: record}, {})) == {
        record.replica_id: record.pid}
    assert not adopter.is_alive(replace(record, replica_id="app#dep#other"))
    adopter.kill_now(record)
    wait_until(lambda: not adopter.is_alive(record))
    wait_until(lambda: not launcher.is_alive(record) and not Path(f"/proc/{record.pid}").exists())


def test_a_spare_that_does_not_fit_is_let_go_and_the_replica_starts_cold(
        tmp_path: Path, cluster_id: str) -> None:
    launcher, spare = with_spare(tmp_path, cluster_id)
    # A replica whose environment sets PYTHONHASHSEED needs an interpreter of its own.
    record = ReplicaRecord("app#dep#cold", "app", "dep", "v1", pid=0, started_at=time.time(),
                           cluster_id=cluster_id)
    pid = launcher.spawn(record, PreparedEnv(env_vars={"PYTHONHASHSEED": "7"}))
    assert pid != spare
    wait_until(lambda: not Path(f"/proc/{spare}").exists())  # let go, and reaped
    wait_until(lambda: replica_pids(cluster_id) == [pid])
    launcher.kill_now(replace(record, pid=pid))
    launcher.stop_spare()
