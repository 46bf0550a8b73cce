"""The records etcd keeps: their bytes and their round trip."""

from __future__ import annotations

import json
from dataclasses import asdict

from weir.etcd.records import ReplicaRecord


def test_a_replica_record_serializes_as_its_fields_and_reads_back_the_same() -> None:
    record = ReplicaRecord("app#D#abc123", "app", "D", "v1", pid=42, started_at=1.5,
                           cluster_id="c", node_id="n1", resources={"CPU": 1.0, "GPU": 1.0},
                           gpu_indices=(0, 3), rank=2, node_rank=0, local_rank=1)
    assert record.to_bytes() == json.dumps(asdict(record)).encode()
    assert ReplicaRecord.from_bytes(record.to_bytes()) == record
