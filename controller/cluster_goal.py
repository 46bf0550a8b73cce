"""The goal as etcd holds it now: applications, options, replica records and live nodes,
read at the start of every pass. The goal and the nodes are read whole each time (they are
few); the replica records, thousands, come from the leader's `ReplicaRecords`, kept by a
watch and a full read every few seconds (`read_records`)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from weir.config.autoscaling import AutoscalingConfig
from weir.controller import reconciler
from weir.controller.goal import AppGoal, DeploymentPlan, deployment_plans
from weir.controller.replica_records import ReplicaRecords
from weir.controller.status import AppView
from weir.etcd.keys import (
    APPS_PREFIX,
    GRPC_OPTIONS_KEY,
    HTTP_OPTIONS_KEY,
    NODES_PREFIX,
    REPLICAS_PREFIX,
)
from weir.etcd.records import NodeRecord, ReplicaRecord
from weir.etcd.store import KeyValue, Store

Key = tuple[str, str]


@dataclass
class ClusterGoal:
    """The goal as etcd holds it now, with the replica records."""

    goals: dict[str, AppGoal] = field(default_factory=dict)
    http_options: dict[str, Any] = field(default_factory=dict)
    grpc_options: dict[str, Any] = field(default_factory=dict)
    records: dict[str, ReplicaRecord] = field(default_factory=dict)
    plans: dict[Key, DeploymentPlan] = field(default_factory=dict)
    #: The live nodes (their agents' lease-bound records).
    nodes: dict[str, NodeRecord] = field(default_factory=dict)

    @property
    def targets(self) -> dict[Key, reconciler.DeploymentTarget]:
        """Each built deployment's target (an autoscaled one's count: to start with)."""
        return {k: p.target for k, p in self.plans.items()}

    def app_views(self) -> list[AppView]:
        """What the status roll-up needs of each application's goal."""
        out = []
        for goal in self.goals.values():
            built = goal.built
            out.append(AppView(
                name=goal.name, deployment_timestamp=goal.deployment_timestamp,
                built=built is not None, build_error=goal.build_error,
                deployments=[d.name for d in built.deployments] if built else [],
                ingress=built.ingress if built else "", route_prefix=goal.route_prefix))
        return out

    @property
    def autoscaling(self) -> dict[Key, AutoscalingConfig]:
        """The autoscaled deployments' configs."""
        return {k: p.autoscaling for k, p in self.plans.items() if p.autoscaling is not None}


async def read_records(store: Store, records: ReplicaRecords) -> int:
    """Read every replica record into `records` (see `ReplicaRecords.load`); the revision
    of the read (a watch from the next one misses nothing)."""
    items, revision = await store.get_prefix(REPLICAS_PREFIX)
    records.load(items, revision)
    return revision


class ParsedNodes:
    """Node records as last parsed, each with the revision it was parsed at: a node's
    record lists every replica on it, and parsing every one on every pass was work that
    grew with the replicas (10 ms a pass at 10,000) for records that rarely change."""

    def __init__(self) -> None:
        self._parsed: dict[str, tuple[int, NodeRecord]] = {}

    def parse(self, items: list[KeyValue]) -> dict[str, NodeRecord]:
        """The nodes of a read of NODES_PREFIX by id, parsing only the records written
        since the last read (a record read at the same revision is the same record)."""
        parsed: dict[str, tuple[int, NodeRecord]] = {}
        for kv in items:
            last = self._parsed.get(kv.key)
            parsed[kv.key] = (last if last is not None and last[0] == kv.mod_revision
                              else (kv.mod_revision, NodeRecord.from_bytes(kv.value)))
        self._parsed = parsed
        return {node.node_id: node for _, node in parsed.values()}


async def read_goal(store: Store, records: ReplicaRecords | None = None,
                    nodes: ParsedNodes | None = None) -> ClusterGoal:
    """Read the goal from etcd, with the replica records kept in `records` (None: read
    them whole now) and the node records parsed again only where they changed since the
    last read with the same `nodes`."""
    out = ClusterGoal()
    # The four reads at once: every pass makes them, and one after the other each waited
    # its turn on a busy event loop (120 to 300 ms a pass at 2,000 replicas in the bench).
    (apps, _), http_options, grpc_options, (node_items, _) = await asyncio.gather(
        store.get_prefix(APPS_PREFIX), store.get(HTTP_OPTIONS_KEY),
        store.get(GRPC_OPTIONS_KEY), store.get_prefix(NODES_PREFIX))
    for kv in apps:
        goal = AppGoal.from_bytes(kv.value)
        out.goals[goal.name] = goal
        out.plans.update({(goal.name, p.target.name): p for p in deployment_plans(goal)})
    out.http_options = json.loads(http_options.value) if http_options else {}
    out.grpc_options = json.loads(grpc_options.value) if grpc_options else {}
    if records is None:
        records = ReplicaRecords()
        await read_records(store, records)
    out.records = records.records
    out.nodes = (nodes or ParsedNodes()).parse(node_items)
    return out
