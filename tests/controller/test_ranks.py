"""Replica ranks: the pure assignment, and the leader reusing a lost replica's rank."""

from __future__ import annotations

import asyncio
import sys

from tests.controller.test_leader import SimulatedNode, SimulatedReplica, run
from weir.build import BuiltApp, DeploymentSpec
from weir.controller.goal import AppGoal
from weir.controller.leader import Leader
from weir.controller.ranks import RankHolder, assign_rank, lowest_free
from weir.etcd.keys import APPS_PREFIX
from weir.etcd.memory_store import ManualClock, MemoryStore
from weir.protos import weir_pb2 as pb


def test_lowest_free_fills_holes_first() -> None:
    assert lowest_free([]) == 0
    assert lowest_free([0, 2, 3]) == 1
    assert lowest_free([1, 0]) == 2


def test_a_replacement_takes_the_freed_rank_and_its_node_keeps_its_node_rank() -> None:
    peers = [RankHolder("a", 0, 0, 0), RankHolder("b", 2, 1, 0), RankHolder("a", 3, 0, 2)]
    assert assign_rank(peers, "a") == (1, 0, 1)
    assert assign_rank(peers, "b") == (1, 1, 1)
    assert assign_rank(peers, "c") == (1, 2, 0)
    assert assign_rank([], "a") == (0, 0, 0)


def test_the_leader_gives_a_lost_replicas_rank_to_its_replacement() -> None:
    async def scenario() -> None:
        clock = ManualClock(100.0)
        store = MemoryStore(clock=clock)
        node = SimulatedNode(store)
        leader = Leader(store, python_executable=sys.executable, clock=clock,
                        wall_clock=lambda: 1e9 + clock())
        await node.run_assigned()
        spec = DeploymentSpec("app", "D", {"num_replicas": 3}, b"v1", ingress=True)
        goal = AppGoal(name="app", config={"name": "app"}, deployment_timestamp=1.0,
                       build_key="k", built_json=BuiltApp("app", [spec]).to_json())
        await store.put(APPS_PREFIX + "app", goal.to_bytes())
        await leader.reconcile_once()
        first = await node.run_assigned()
        assert sorted(r.rank for r in first) == [0, 1, 2]
        replicas = {}
        for i, record in enumerate(first):
            replicas[record.replica_id] = SimulatedReplica(leader, record, 2000 + i)
            await replicas[record.replica_id].report(pb.STARTING)
            await replicas[record.replica_id].report(pb.RUNNING, version=record.version)
        await leader.reconcile_once()
        lost = next(r for r in first if r.rank == 1)
        await node.kill(lost.replica_id)
        replicas[lost.replica_id].close()
        replacement = []
        for _ in range(5):
            await leader.reconcile_once()
            replacement += await node.run_assigned()
            if replacement:
                break
            await asyncio.sleep(0)
            clock.advance(1.0)  # past the crash-loop backoff of one failure
        assert [r.rank for r in replacement] == [1]
        assert sorted(r.rank for r in leader.records.values()) == [0, 1, 2]
        given = leader.spec_for(replacement[0])
        assert given is not None
        assert given["rank"] == {"rank": 1, "node_rank": 0, "local_rank": 1}
        assert given["world_size"] == 3
        for replica in replicas.values():
            replica.close()

    run(scenario())
