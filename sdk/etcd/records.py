"""What etcd keeps of replicas and nodes: the records that let a new leader adopt replicas
and node agents run them. Plain data, serialized as JSON; the keys are `weir.etcd.keys`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class ReplicaRecord:
    """A replica the leader assigned: written before it starts, so a new leader adopts it
    instead of starting another, and its node's agent knows to run it."""

    replica_id: str
    app: str
    deployment: str
    version: str
    #: The replica's process, once known (its node's agent and its registration say).
    pid: int
    started_at: float
    cluster_id: str = ""
    log_file: str = ""
    #: The node that runs it ("" before multi-host: the leader's machine).
    node_id: str = ""
    #: What it holds of its node's resources (Ray's names: CPU, GPU, memory, custom).
    resources: dict[str, float] = field(default_factory=dict)
    #: The GPUs it was given, by index (its CUDA_VISIBLE_DEVICES).
    gpu_indices: tuple[int, ...] = ()
    #: Its rank among its deployment version's replicas, its node's among their nodes and
    #: its own on its node, as the leader assigned them (`weir.controller.ranks`; -1 in
    #: records written before ranks were assigned).
    rank: int = -1
    node_rank: int = -1
    local_rank: int = -1

    def to_bytes(self) -> bytes:
        """Serialize for etcd. (Its fields as they are: `asdict` copies them deeply first,
        60 us a record, most of a 10,000-replica deploy's writes.)"""
        return json.dumps(vars(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReplicaRecord:
        """Inverse of `to_bytes`."""
        fields = json.loads(data)
        fields["gpu_indices"] = tuple(fields.get("gpu_indices", ()))
        return cls(**fields)


@dataclass(frozen=True)
class NodeRecord:
    """A machine that runs replicas, as its agent registers it (bound to the agent's lease:
    a node whose agent stops renewing it disappears, and is dead)."""

    node_id: str
    #: The address replicas on it bind to and advertise.
    host: str
    #: What it offers (Ray's names: CPU, GPU, memory, custom resources).
    resources: dict[str, float]
    labels: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0
    #: The agent's process.
    pid: int = 0
    #: Replica id -> PID of each replica process the agent runs now.
    replicas: dict[str, int] = field(default_factory=dict)
    #: Replica id -> why the agent could not start it (its runtime_env, say).
    failed: dict[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Serialize for etcd."""
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> NodeRecord:
        """Inverse of `to_bytes`."""
        return cls(**json.loads(data))
