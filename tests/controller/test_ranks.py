"""Replica ranks: the pure assignment, and the leader reusing a lost replica's rank."""

from __future__ import annotations

import asyncio
import random
import sys

from tests.controller.test_leader import SimulatedNode, SimulatedReplica, run
from weir.build import BuiltApp, DeploymentSpec
from weir.controller.goal import AppGoal
from weir.controller.leader import Leader
from weir.controller.ranks import RankHolder, Ranks, lowest_free
from weir.etcd.keys import APPS_PREFIX
from weir.etcd.memory_store import ManualClock, MemoryStore
from weir.protos import weir_pb2 as pb


def test_lowest_free_fills_holes_first() -> None:
    assert lowest_free([]) == 0
    assert lowest_free([0, 2, 3]) == 1
    assert lowest_free([1, 0]) == 2


def test_a_replacement_takes_the_freed_rank_and_its_node_keeps_its_node_rank() -> None:
    peers = [RankHolder("a", 0, 0, 0), RankHolder("b", 2, 1, 0), RankHolder("a", 3, 0, 2)]
    assert Ranks(peers).take("a") == (1, 0, 1)
    assert Ranks(peers).take("b") == (1, 1, 1)
    assert Ranks(peers).take("c") == (1, 2, 0)
    assert Ranks([]).take("a") == (0, 0, 0)


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


def _by_walking(peers: list[RankHolder], node_id: str) -> tuple[int, int, int]:
    """The ranks of a new replica found by walking every peer (what `Ranks` must equal)."""
    node_ranks = {p.node_id: p.node_rank for p in peers if p.node_rank >= 0}
    node_rank = node_ranks.get(node_id)
    if node_rank is None:
        node_rank = lowest_free(node_ranks.values())
    local = lowest_free(p.local_rank for p in peers if p.node_id == node_id)
    return lowest_free(p.rank for p in peers), node_rank, local


def test_ranks_handed_out_one_after_another_equal_a_walk_of_the_peers_each_time() -> None:
    rng = random.Random(7)
    for _ in range(200):
        nodes = [f"n{i}" for i in range(rng.randint(1, 5))]
        # Live peers with holes in every kind of rank (replicas that were replaced).
        peers = [RankHolder(rng.choice(nodes), rank, rng.randint(-1, 3), rng.randint(-1, 4))
                 for rank in rng.sample(range(12), rng.randint(0, 8))]
        ranks = Ranks(peers)
        for _ in range(rng.randint(1, 15)):
            node = rng.choice([*nodes, "new"])
            expected = _by_walking(peers, node)
            assert ranks.take(node) == expected
            peers.append(RankHolder(node, *expected))
