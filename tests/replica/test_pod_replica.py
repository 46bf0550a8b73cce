"""A replica pod's first process when it cannot get its code: it exits 1 and leaves why
where Kubernetes reads a container's last words (real etcd, no controller)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from weir.etcd.etcd_store import EtcdStore
from weir.etcd.keys import APPS_PREFIX, REPLICAS_PREFIX
from weir.etcd.records import ReplicaRecord
from weir.etcd.server import EtcdServer
from weir.replica import pod_replica
from weir.runtime_env import package_uri

SHIPPED = ReplicaRecord("shipped#Model#1a2b3c", "shipped", "Model", "v1", pid=0,
                        started_at=0.0)


@pytest.fixture(scope="module")
def etcd() -> Iterator[str]:
    """etcd with one replica whose app names a package no controller holds."""
    with EtcdServer() as server:

        async def seed() -> None:
            store = EtcdStore(server.endpoint)
            goal = {"config": {"runtime_env": {"working_dir": package_uri("f" * 64)}}}
            await store.put(APPS_PREFIX + SHIPPED.app, json.dumps(goal).encode())
            await store.put(REPLICAS_PREFIX + SHIPPED.replica_id, SHIPPED.to_bytes())
            await store.close()

        asyncio.run(seed())
        yield server.endpoint


def last_words(etcd: str, replica_id: str, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the pod's entry point in this process; its exit code must be 1."""
    termination = tmp_path / "termination-log"
    termination.touch()  # Kubernetes makes it; the entry point writes only where it exists
    monkeypatch.setattr(pod_replica, "TERMINATION_LOG", termination)
    monkeypatch.setenv("WEIR_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit) as exited:
        pod_replica.main(["--replica-id", replica_id, "--etcd", etcd, "--cluster-id", "c",
                          "--host", "127.0.0.1"])
    assert exited.value.code == 1
    return termination.read_text()


def test_a_package_no_controller_holds_ends_the_pod_saying_why(
        etcd: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    words = last_words(etcd, SHIPPED.replica_id, tmp_path, monkeypatch)
    assert words.startswith(f"replica {SHIPPED.replica_id} cannot get its code: ")
    assert "runtime_env.working_dir" in words and "none is registered" in words


def test_a_replica_stopped_before_its_pod_started_ends_it(
        etcd: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    words = last_words(etcd, "gone#Model#000000", tmp_path, monkeypatch)
    assert f"replica gone#Model#000000 is not in etcd at {etcd}" in words
