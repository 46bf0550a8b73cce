"""The node agent's decision: start what is assigned and never ran, kill what is no longer
assigned."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from tests.sdk.packages.servers import package_servers
from tests.sdk.packages.trees import make_tree
from weir.etcd.keys import APPS_PREFIX, CONTROLLERS_PREFIX
from weir.etcd.memory_store import MemoryStore
from weir.etcd.records import NodeRecord, ReplicaRecord
from weir.packages import PackageCache, pack
from weir.replica.node_agent import NodeAgent, default_resources, plan_node
from weir.runtime_env import package_uri


def rec(rid: str, pid: int = 0) -> ReplicaRecord:
    return ReplicaRecord(rid, "app", "D", "v1", pid=pid, started_at=0.0, node_id="n1")


def test_assigned_and_not_running_starts() -> None:
    plan = plan_node({"a": rec("a"), "b": rec("b")}, {"a": 10}, done=set())
    assert [r.replica_id for r in plan.start] == ["b"] and plan.kill == ()


def test_running_and_no_longer_assigned_is_killed() -> None:
    assert plan_node({}, {"a": 10, "b": 11}, done=set()).kill == (10, 11)


def test_a_replica_is_started_once() -> None:
    # It ran here and ended, or failed to start: the leader replaces it, the agent does not.
    assert plan_node({"a": rec("a")}, {}, done={"a"}).start == ()
    # It registered (a PID) and is not running here: it ran somewhere; not started again.
    assert plan_node({"a": rec("a", pid=99)}, {}, done=set()).start == ()


def test_resources_as_told_else_environment_else_machine() -> None:
    assert default_resources(3, 1, {"tpu": 2}, environ={}) == {"CPU": 3.0, "GPU": 1.0,
                                                              "tpu": 2.0}
    env = {"WEIR_NUM_CPUS": "64", "WEIR_NUM_GPUS": "0"}
    assert default_resources(None, None, {}, environ=env) == {"CPU": 64.0, "GPU": 0.0}
    assert default_resources(None, 0, {}, environ={})["CPU"] >= 1


def test_an_apps_code_is_fetched_as_soon_as_its_goal_names_it(tmp_path: Path) -> None:
    """Before any replica is assigned (the app is still being built), the node's cache gets
    the package the goal names, from a controller listed in etcd."""
    digest, data = pack(make_tree(tmp_path / "code"))
    goal = {"config": {"runtime_env": {"working_dir": package_uri(digest)}}}

    async def main(address: str) -> PackageCache:
        store = MemoryStore()
        await store.put(CONTROLLERS_PREFIX + "c", json.dumps({"address": address}).encode())
        cache = PackageCache(tmp_path / "node")
        node = NodeRecord(node_id="n1", host="127.0.0.1", resources={}, started_at=0.0)
        agent = NodeAgent(store, node, _NoLauncher(), 3.0, cache)
        prefetcher = asyncio.get_running_loop().create_task(agent._watch_apps())
        await asyncio.sleep(0)  # the watch is in place
        await store.put(APPS_PREFIX + "app", json.dumps(goal).encode())
        # The cache is a folder: polled from a thread while the loop runs the agent.
        await asyncio.to_thread(_poll, lambda: cache.has(digest), 30)
        prefetcher.cancel()
        return cache

    with package_servers(tmp_path, 1) as (holding,):
        holding.cache.put(digest, [data])
        cache = asyncio.run(main(holding.address))
        assert cache.has(digest)
        assert holding.calls == [f"Fetch {digest[:8]}"]


class _NoLauncher:
    """The prefetch starts nothing."""

    async def launch(self, record: ReplicaRecord, env: object) -> int:
        raise AssertionError("nothing is assigned")


def _poll(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)


class _SpareKeeper:
    """A launcher with a warm spare (`KeepsSpare`) and nothing assigned: counts the calls."""

    def __init__(self) -> None:
        self.tended = 0
        self.closed = 0
        self.tended_twice = asyncio.Event()
        self.expecting = asyncio.Event()

    async def launch(self, record: ReplicaRecord, env: object) -> int:
        raise AssertionError("nothing is assigned")

    async def adopt(self, assigned: object, known: object) -> dict[str, int]:
        return {}

    async def ended(self, running: object) -> dict[str, str]:
        return {}

    async def kill(self, record: ReplicaRecord) -> None:
        raise AssertionError("nothing runs")

    async def tend(self) -> None:
        self.tended += 1
        if self.tended >= 2:
            self.tended_twice.set()

    async def close(self) -> None:
        self.closed += 1

    def expect_replicas(self) -> None:
        self.expecting.set()


def test_the_agent_tends_its_launchers_spare_and_lets_it_go_as_it_exits() -> None:
    """Each pass tends the spare; a deploy (an app goal written) says replicas may come."""

    async def main() -> _SpareKeeper:
        launcher = _SpareKeeper()
        node = NodeRecord(node_id="n1", host="127.0.0.1", resources={}, started_at=0.0)
        store = MemoryStore()
        agent = NodeAgent(store, node, launcher, 3.0)
        signalled = asyncio.Event()
        task = asyncio.get_running_loop().create_task(agent.run(signalled))
        await asyncio.wait_for(launcher.tended_twice.wait(), 10)  # two passes
        assert not launcher.expecting.is_set()
        await store.put(APPS_PREFIX + "app", json.dumps({"config": {}}).encode())
        await asyncio.wait_for(launcher.expecting.wait(), 10)
        assert launcher.closed == 0
        signalled.set()
        await asyncio.wait_for(task, 10)
        return launcher

    launcher = asyncio.run(main())
    assert launcher.tended >= 2 and launcher.closed == 1
