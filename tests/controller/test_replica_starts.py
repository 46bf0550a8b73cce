"""What the leader logs of the replicas it assigns: a line each for a few, a line per
deployment version for many (pure)."""

from __future__ import annotations

from weir.controller.replica_starts import ASSIGNED_LINES_EACH, assignment_lines
from weir.etcd.records import ReplicaRecord


def record(n: int, deployment: str, version: str, node: str) -> ReplicaRecord:
    return ReplicaRecord(f"app#{deployment}#{n}", "app", deployment, version, 0, 0.0,
                         node_id=node)


def test_many_assignments_make_a_line_per_deployment_version_with_counts_per_node() -> None:
    records = [record(n, "D", "v2", f"node-{n % 3}") for n in range(1000)]
    records += [record(n, "E", "v1", "node-0") for n in range(5)]
    assert len(records) > ASSIGNED_LINES_EACH
    assert assignment_lines(records) == [
        {"app": "app", "deployment": "D", "version": "v2", "count": 1000,
         "per_node": {"node-0": 334, "node-1": 333, "node-2": 333}},
        {"app": "app", "deployment": "E", "version": "v1", "count": 5,
         "per_node": {"node-0": 5}}]
    assert assignment_lines([]) == []
