"""Ranks from replica records (weir.replica.replica_rank), over plain data."""

from __future__ import annotations

from weir.etcd.records import ReplicaRecord
from weir.replica.replica_rank import node_ranks, rank_among, world_size_of


def record(replica_id: str, node: str = "n1") -> ReplicaRecord:
    return ReplicaRecord(replica_id, "app", "Model", "v1", 0, 0.0, node_id=node)


def test_ranks_follow_the_order_records_were_written_in() -> None:
    records = [(12, record("c")), (10, record("b")), (11, record("a"))]
    assert [rank_among(records, r) for r in ("b", "a", "c")] == [0, 1, 2]
    assert rank_among(records, "unknown") == 0


def test_node_and_local_ranks() -> None:
    records = [(1, record("a", "n1")), (2, record("b", "n2")), (3, record("c", "n1"))]
    assert node_ranks(records, "a") == (0, 0)
    assert node_ranks(records, "b") == (1, 0)
    assert node_ranks(records, "c") == (0, 1)


def test_world_size_is_the_fixed_count_else_the_peers() -> None:
    assert world_size_of({"num_replicas": 3}, 1) == 3
    assert world_size_of({"num_replicas": "auto"}, 2) == 2
    assert world_size_of({}, 0) == 1
