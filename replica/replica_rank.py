"""A replica's rank among its deployment's replicas (Ray's `ReplicaRank`), for
`serve.get_replica_context().rank` and `reconfigure(self, user_config, rank)`.

The leader hands out ranks (`weir.controller.ranks`): each replica's spec carries its
"rank" (rank, node_rank, local_rank) and the deployment's "world_size", and a replica that
replaces a lost one takes the lost one's rank. A replica whose record predates that (started
by an older leader) works its own out from the replica records in etcd: the records of its
deployment's current version, ordered by when they were written (their create revision, so
all replicas agree on the order), give ranks 0, 1, 2...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from weir.etcd.etcd_store import EtcdStore
from weir.etcd.keys import REPLICAS_PREFIX
from weir.etcd.records import ReplicaRecord
from weir.runtime_context import ReplicaRank

log = structlog.get_logger("weir.replica.rank")


def rank_among(records: Iterable[tuple[int, ReplicaRecord]], replica_id: str) -> int:
    """The rank of `replica_id` among `(create_revision, record)` of the same deployment
    and version: its index in creation order (0 if it is not among them). Pure."""
    ordered = sorted(records, key=lambda item: (item[0], item[1].replica_id))
    ids = [record.replica_id for _, record in ordered]
    return ids.index(replica_id) if replica_id in ids else 0


def node_ranks(records: Iterable[tuple[int, ReplicaRecord]], replica_id: str) -> tuple[int, int]:
    """(node_rank, local_rank) of `replica_id`: its node's index among the nodes of the
    deployment's replicas (by their first replica), and its index among its node's. Pure."""
    ordered = sorted(records, key=lambda item: (item[0], item[1].replica_id))
    nodes: list[str] = []
    for _, record in ordered:
        if record.node_id not in nodes:
            nodes.append(record.node_id)
    mine = next((r for _, r in ordered if r.replica_id == replica_id), None)
    if mine is None:
        return 0, 0
    local = [r.replica_id for _, r in ordered if r.node_id == mine.node_id]
    return nodes.index(mine.node_id), local.index(replica_id)


def world_size_of(options: Mapping[str, Any], peers: int) -> int:
    """The deployment's replica count: num_replicas when fixed, else how many run now."""
    fixed = options.get("num_replicas")
    return fixed if isinstance(fixed, int) and fixed > 0 else max(1, peers)


async def read_rank(etcd_endpoints: str, replica_id: str, spec: Mapping[str, Any],
                    ) -> tuple[ReplicaRank, int]:
    """The replica's rank and the deployment's world size: from the spec when the leader
    gives them, else from the replica records (rank 0 if etcd cannot be read)."""
    options = spec.get("options", {})
    if "rank" in spec:
        rank = spec["rank"]
        given = (ReplicaRank(**rank) if isinstance(rank, dict) else ReplicaRank(int(rank)))
        return given, int(spec.get("world_size") or world_size_of(options, 1))
    peers: list[tuple[int, ReplicaRecord]] = []
    if etcd_endpoints:
        store = EtcdStore(etcd_endpoints)
        try:
            await store.connect()
            items, _ = await store.get_prefix(REPLICAS_PREFIX)
            for kv in items:
                record = ReplicaRecord.from_bytes(kv.value)
                if (record.app, record.deployment, record.version) == (
                        spec.get("app"), spec.get("deployment"), spec.get("version")):
                    peers.append((kv.create_revision, record))
        except Exception as exc:  # a rank is not worth failing the replica for
            log.warning("cannot read the replica records for a rank; using 0", error=str(exc))
        finally:
            await store.close()
    node_rank, local_rank = node_ranks(peers, replica_id)
    return (ReplicaRank(rank_among(peers, replica_id), node_rank, local_rank),
            world_size_of(options, len(peers)))
