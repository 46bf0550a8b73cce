"""What the leader answers reads with: the applications' status, the replicas, the nodes.

Design. A read never changes the leader's state: it looks at what the last pass kept (the
goal, the replicas' views, the judgements, the autoscaler's decisions) or views the
replicas afresh without keeping what it saw, so that asking for status never changes
what status later says. The status roll-up is also the pass's own step (`roll_up`: the
pass keeps what it gives; a read does not). No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

from weir.controller.autoscaler import ScalingState, describe, with_decisions
from weir.controller.cluster_goal import ClusterGoal
from weir.controller.deployment_changes import DeploymentChanges
from weir.controller.deployment_status import StatusInfo
from weir.controller.health import DeploymentHealth
from weir.controller.nodes import nodes_document
from weir.controller.observations import Observations, observe_all
from weir.controller.reconciler import Views
from weir.controller.replica_sessions import ReplicaSessions
from weir.controller.status import Rollup, roll_up
from weir.etcd.records import NodeRecord

Key = tuple[str, str]


class LeaderState(Protocol):
    """What the reads look at of the leader (its last pass's)."""

    goal: ClusterGoal
    scaling: dict[Key, ScalingState]
    health: dict[Key, DeploymentHealth]
    statuses: dict[Key, StatusInfo]
    #: Each deployment's replicas by state as of the last pass.
    counts: dict[Key, dict[str, int]]
    observations: Observations
    deployment_changes: DeploymentChanges
    sessions: ReplicaSessions
    dead_nodes: dict[str, tuple[NodeRecord, float]]

    @property
    def failures(self) -> Mapping[str, str]:
        """Why each replica that failed its health checks failed them."""

    def wall_clock(self) -> float:
        """Wall-clock time now."""

    def clock(self) -> float:
        """Monotonic time now."""


def rollup(leader: LeaderState, views: Views, unchanged: frozenset[Key] = frozenset()
           ) -> Rollup:
    """The status of every application and deployment from `views`, the deployments in
    `unchanged` taken as the last pass left them (`weir.controller.status.roll_up`)."""
    autoscaling = {k: describe(c, leader.scaling[k])
                   for k, c in leader.goal.autoscaling.items() if k in leader.scaling}
    return roll_up(leader.goal.app_views(), with_decisions(leader.goal.targets, leader.scaling),
                   views, leader.health, leader.statuses,
                   autoscaled=leader.goal.autoscaling.keys(), autoscaling=autoscaling,
                   unchanged=unchanged, counts=leader.counts)


def status_document(leader: LeaderState) -> dict[str, Any]:
    """The `applications:` document of `weir status`, from the replicas as the last pass
    viewed them (at most TICK_S old; a pass comes at once after every change of state):
    only the deployments the last pass did not leave settled are rolled up again. Viewing
    and rolling up every replica for each call cost as much as a whole pass, on the loop,
    at every `weir status`."""
    targets = with_decisions(leader.goal.targets, leader.scaling)
    return rollup(leader, leader.observations.groups(),
                  leader.deployment_changes.settled(targets)).doc


def replica_list(leader: LeaderState) -> list[dict[str, Any]]:
    """Every replica with its state, for `ListReplicas`, viewed now (nothing kept)."""
    views, _ = observe_all(leader.goal.records, leader.sessions.report_of, leader.goal.nodes,
                           leader.observations.books, leader.failures,
                           wall_now=leader.wall_clock(), mono_now=leader.clock())
    out = []
    for view in views:
        record = leader.goal.records[view.replica_id]
        report = leader.sessions.report_of(view.replica_id)
        out.append({
            "replica_id": view.replica_id, "app": view.app, "deployment": view.deployment,
            "version": view.version, "state": "STOPPING" if view.stopping else view.state,
            "pid": record.pid, "address": report.address if report else "",
            "ongoing": report.ongoing if report else 0, "log_file": record.log_file,
            "node_id": record.node_id,
        })
    return out


def node_list(leader: LeaderState) -> list[dict[str, Any]]:
    """Every node with its resources and replicas, for `weir status`."""
    addresses = {rid: r.address for rid in leader.goal.records
                 if (r := leader.sessions.report_of(rid)) is not None}
    doc = nodes_document(leader.goal.nodes, leader.goal.records.values(), addresses,
                         leader.dead_nodes)
    # Where Prometheus scrapes each replica (weir.metrics).
    for node in doc:
        for entry in cast(list[dict[str, str]], node["replicas"]):
            held = leader.sessions.sessions.get(entry["replica_id"])
            if held is not None and held.report.metrics_address:
                entry["metrics"] = held.report.metrics_address
    return doc
