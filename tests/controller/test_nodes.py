"""Nodes as the leader sees them: liveness from the agents' records, free resources,
the status document, nodes found gone."""

from __future__ import annotations

from weir.controller.nodes import (
    AGENT_START_GRACE_S,
    node_views,
    nodes_document,
    replica_liveness,
    update_dead_nodes,
)
from weir.etcd.records import NodeRecord, ReplicaRecord

NODE = NodeRecord("n1", "10.0.0.1", {"CPU": 4.0, "GPU": 2.0}, replicas={"r1": 101},
                  failed={"r3": "node n1 cannot start replica r3: no such dir"})
NODES = {"n1": NODE}


def rec(rid: str, node: str = "n1", started: float = 1000.0, **kw: object) -> ReplicaRecord:
    return ReplicaRecord(rid, "app", "D", "v1", pid=0, started_at=started, node_id=node,
                         **kw)  # type: ignore[arg-type]


def test_listed_replicas_live_and_gone_nodes_kill_theirs() -> None:
    assert replica_liveness(rec("r1"), NODES, 2000.0, listed_before=False).alive
    gone = replica_liveness(rec("r1", node="n9"), NODES, 2000.0, listed_before=True)
    assert not gone.alive and "node n9 is gone" in gone.reason


def test_a_fresh_assignment_is_alive_until_the_agent_had_time() -> None:
    assert replica_liveness(rec("r2", started=1000.0), NODES, 1001.0, listed_before=False).alive
    late = replica_liveness(rec("r2", started=1000.0), NODES, 1000.0 + AGENT_START_GRACE_S + 1,
                            listed_before=False)
    assert not late.alive and "does not run it" in late.reason


def test_a_replica_listed_before_and_absent_now_has_ended() -> None:
    ended = replica_liveness(rec("r2", started=1000.0), NODES, 1001.0, listed_before=True)
    assert not ended.alive


def test_a_start_failure_is_reported_with_the_agents_reason() -> None:
    failed = replica_liveness(rec("r3"), NODES, 1001.0, listed_before=False)
    assert not failed.alive and "no such dir" in failed.reason


def test_node_views_sum_the_assigned_replicas() -> None:
    records = [rec("r1", resources={"CPU": 1.0, "GPU": 1.0}, gpu_indices=(1,)),
               rec("r2", resources={"CPU": 2.0}), rec("r9", node="gone", resources={"CPU": 8})]
    [view] = node_views(NODES, records)
    assert view.free("CPU") == 1.0 and view.free("GPU") == 1.0
    assert view.replicas == {("app", "D"): 2}
    assert view.gpu_use == {1: 1.0}


def test_status_lists_nodes_with_replicas_and_the_dead() -> None:
    records = [rec("r1", resources={"CPU": 1.0})]
    dead = {"n2": (NodeRecord("n2", "10.0.0.2", {"CPU": 2.0}), 1234.5)}
    doc = nodes_document(NODES, records, {"r1": "10.0.0.1:5000"}, dead)
    assert doc[0]["state"] == "ALIVE" and doc[0]["used"] == {"CPU": 1.0}
    assert doc[0]["replicas"] == [{"replica_id": "r1", "deployment": "app/D",
                                   "address": "10.0.0.1:5000"}]
    assert doc[1] == {"node_id": "n2", "address": "10.0.0.2", "state": "DEAD",
                      "died_at": 1234.5, "resources": {"CPU": 2.0}, "replicas": []}


def test_nodes_found_gone_are_remembered_until_they_return() -> None:
    n2 = NodeRecord("n2", "10.0.0.2", {"CPU": 2.0})
    dead = update_dead_nodes({}, {"n1": NODE, "n2": n2}, {"n1": NODE}, wall_now=50.0)
    assert dead == {"n2": (n2, 50.0)}
    assert update_dead_nodes(dead, {"n1": NODE, "n2": n2}, {"n1": NODE}, 60.0) == dead
    assert update_dead_nodes(dead, {"n1": NODE, "n2": n2}, {"n1": NODE, "n2": n2}, 70.0) == {}
    assert update_dead_nodes(dead, {}, {}, 50.0 + 3601.0) == {}
