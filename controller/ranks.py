"""Replica ranks: which rank a new replica of a deployment takes (Ray's `ReplicaRank`).

Design. Ray keeps each deployment's ranks contiguous, 0..N-1, and a replica that replaces
a lost one takes the rank that was freed, so code that shards work by rank (one shard per
rank, `world_size` shards) keeps every shard served. The leader decides the rank when it
assigns a replica and writes it into the replica's record, so it survives a failover and
the replica reads it from its spec. A rank belongs to a replica of one version (a rolling
update gives the new version 0..N-1 of its own) and is freed when the replica is stopping,
failed or dead. The same holds for the node rank (the node's index among the nodes running
the deployment) and the local rank (the replica's index on its node).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class RankHolder:
    """A live replica's ranks, as its record holds them (-1: none given)."""

    node_id: str
    rank: int
    node_rank: int = -1
    local_rank: int = -1


def lowest_free(taken: Iterable[int]) -> int:
    """The smallest rank (0, 1, 2...) not in `taken`."""
    used = set(taken)
    rank = 0
    while rank in used:
        rank += 1
    return rank


def assign_rank(peers: Iterable[RankHolder], node_id: str) -> tuple[int, int, int]:
    """(rank, node_rank, local_rank) for a new replica on `node_id`, given its live peers
    (the same deployment and version). Pure."""
    peers = list(peers)
    node_ranks = {p.node_id: p.node_rank for p in peers if p.node_rank >= 0}
    node_rank = node_ranks.get(node_id)
    if node_rank is None:
        node_rank = lowest_free(node_ranks.values())
    local = lowest_free(p.local_rank for p in peers if p.node_id == node_id)
    return lowest_free(p.rank for p in peers), node_rank, local
