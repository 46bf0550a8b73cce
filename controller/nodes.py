"""Nodes as the leader sees them: which replicas run, what each node has free, and what
`weir status` says of them. Pure functions over the records read from etcd.

A replica's process lives on its node; the node's agent reports the processes it runs in
the node's (lease-bound) record. So a replica is alive while its node's record lists it,
or while it was just assigned and the agent has not started it yet; it is dead when the
agent reports it gone, failed to start it, or the node itself is gone (its agent stopped
renewing its lease: the machine, or the agent, died).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from weir.controller.placement import NodeView, PlacedReplica, node_view
from weir.etcd.records import NodeRecord, ReplicaRecord

#: How long an assigned replica may wait for its node's agent to start it.
AGENT_START_GRACE_S = 15.0

Key = tuple[str, str]


@dataclass(frozen=True)
class Liveness:
    """Whether a replica's process runs, and if not, why."""

    alive: bool
    reason: str = ""
    #: Its node's agent lists it as running now.
    listed: bool = False


def replica_liveness(record: ReplicaRecord, nodes: Mapping[str, NodeRecord],
                     wall_now: float, *, listed_before: bool) -> Liveness:
    """Whether `record`'s process runs, from its node's record. `listed_before`: the
    agent has listed it running before (so its absence now means it ended, not that it
    has not started yet)."""
    node = nodes.get(record.node_id)
    if node is None:
        return Liveness(False, f"its node {record.node_id or '(none)'} is gone")
    if record.replica_id in node.replicas:
        return Liveness(True, listed=True)
    if record.replica_id in node.failed:
        return Liveness(False, node.failed[record.replica_id])
    if not listed_before and wall_now - record.started_at < AGENT_START_GRACE_S:
        return Liveness(True)  # assigned; the agent has not started it yet
    return Liveness(False, f"its node {record.node_id} does not run it")


def node_views(nodes: Mapping[str, NodeRecord], records: Iterable[ReplicaRecord]
               ) -> list[NodeView]:
    """What each live node offers and what the replicas assigned to it hold."""
    placed: dict[str, list[PlacedReplica]] = {n: [] for n in nodes}
    for r in records:
        if r.node_id in placed:
            placed[r.node_id].append(PlacedReplica((r.app, r.deployment), dict(r.resources),
                                                   tuple(r.gpu_indices)))
    return [node_view(n, dict(node.resources), placed[n]) for n, node in sorted(nodes.items())]


def nodes_document(nodes: Mapping[str, NodeRecord], records: Iterable[ReplicaRecord],
                   addresses: Mapping[str, str], dead: Mapping[str, tuple[NodeRecord, float]]
                   ) -> list[dict[str, object]]:
    """The `nodes:` part of `weir status`: each node, its resources offered and used, and
    the replicas on it; nodes that left, as DEAD with the time they were found gone."""
    by_node: dict[str, list[ReplicaRecord]] = {}
    for r in records:
        by_node.setdefault(r.node_id, []).append(r)
    out: list[dict[str, object]] = []
    for node_id, node in sorted(nodes.items()):
        on_it = by_node.get(node_id, [])
        used: dict[str, float] = {}
        for r in on_it:
            for name, amount in r.resources.items():
                used[name] = used.get(name, 0.0) + amount
        out.append({
            "node_id": node_id, "address": node.host, "state": "ALIVE",
            "resources": dict(node.resources), "used": used, "labels": dict(node.labels),
            "replicas": [{"replica_id": r.replica_id, "deployment": f"{r.app}/{r.deployment}",
                          "address": addresses.get(r.replica_id, "")}
                         for r in sorted(on_it, key=lambda r: r.replica_id)],
        })
    for node_id, (node, died_at) in sorted(dead.items()):
        out.append({"node_id": node_id, "address": node.host, "state": "DEAD",
                    "died_at": died_at, "resources": dict(node.resources), "replicas": []})
    return out


def update_dead_nodes(previous: Mapping[str, tuple[NodeRecord, float]],
                      seen: Mapping[str, NodeRecord], now_nodes: Mapping[str, NodeRecord],
                      wall_now: float, keep_s: float = 3600.0
                      ) -> dict[str, tuple[NodeRecord, float]]:
    """Nodes seen before and gone now, with when they were found gone (kept `keep_s`);
    a node that comes back is alive again."""
    out = {n: v for n, v in previous.items()
           if n not in now_nodes and wall_now - v[1] < keep_s}
    for node_id, node in seen.items():
        if node_id not in now_nodes and node_id not in out:
            out[node_id] = (node, wall_now)
    return out
