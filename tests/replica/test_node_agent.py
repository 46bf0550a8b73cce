"""The node agent's decision: start what is assigned and never ran, kill what is no longer
assigned."""

from __future__ import annotations

from weir.etcd.records import ReplicaRecord
from weir.replica.node_agent import default_resources, plan_node


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
