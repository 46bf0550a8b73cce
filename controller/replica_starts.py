"""Starting replicas: placing each on a node, ranking it, writing its record, and what
it runs (`replica_spec`).

Design. A new replica is a record before it is a process: the leader places it
(`weir.controller.placement`), ranks it among its version's replicas
(`weir.controller.ranks`) and writes its record; the node's agent starts what its records
say. The node views are built once for a pass's starts and updated as each is placed (at
thousands of replicas, rebuilding them per replica made one pass take seconds), and the
records go to etcd RECORDS_PER_WRITE per transaction, not one round trip each. A replica
that cannot start now (its runtime_env failed, or no node fits it) leaves the reason for
its deployment's status (`take_reasons`).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog

from weir.controller import reconciler
from weir.controller.autoscaler import ScalingState
from weir.controller.cluster_goal import ClusterGoal
from weir.controller.goal import AppGoal
from weir.controller.nodes import node_views
from weir.controller.observe import ReplicaBook
from weir.controller.placement import NodeView, NoFit, PlacedReplica, place, replica_request
from weir.controller.ranks import RankHolder, Ranks
from weir.controller.reconciler import ReplicaView
from weir.controller.record_writer import RECORDS_PER_WRITE
from weir.controller.replica_records import ReplicaRecords
from weir.etcd.keys import REPLICAS_PREFIX
from weir.etcd.records import ReplicaRecord
from weir.etcd.store import Store
from weir.metrics import controller_metrics
from weir.packages.cache import PackageCache
from weir.packages.resolver import controller_addresses, package_resolver
from weir.runtime_env import PreparedEnv, RuntimeEnvError, names_packages, prepare

log = structlog.get_logger("weir.controller")

Key = tuple[str, str]
#: Starts placed between two turns of the event loop (each costs ~0.1-0.2 ms of CPU).
STARTS_PER_TURN = 200
#: A pass that assigns at most this many replicas logs a line for each at info; one that
#: assigns more logs a line per deployment version (`assignment_lines`), and each replica
#: at debug: a deploy of 10,000 replicas wrote 10,000 info lines from the leader's loop.
ASSIGNED_LINES_EACH = 10


def new_replica_id(app: str, deployment: str, taken: Callable[[str], bool],
                   token: Callable[[], str] = lambda: secrets.token_hex(3)) -> str:
    """A replica id for `deployment` that `taken` says no replica has: a random part of 6
    hex digits (16.7 million) collides within a few thousand replicas (two of 5,000 in
    one run), and two records under one key would be one replica."""
    while taken(replica_id := f"{app}#{deployment}#{token()}"):
        pass
    return replica_id


def replica_spec(record: ReplicaRecord, goal: ClusterGoal,
                 scaling: Mapping[Key, ScalingState]) -> dict[str, Any] | None:
    """What a replica runs (its INIT's spec): None if its version is no longer wanted. A
    ranked replica's world size is its deployment's target (the autoscaler's, if it
    scales). Pure."""
    p = goal.plans.get((record.app, record.deployment))
    if p is None or p.target.version != record.version:
        return None
    # No sys.path entries from here: the leader's are its own machine's paths (its
    # package cache); the replica's node put its own on the replica's PYTHONPATH.
    spec = {
        "app": record.app, "deployment": record.deployment, "version": record.version,
        "definition": base64.b64encode(p.spec.definition).decode(),
        "options": p.options,
        "grpc_servicer_functions": goal.grpc_options.get("grpc_servicer_functions", []),
    }
    if record.rank >= 0:
        key = (record.app, record.deployment)
        size = scaling[key].target if key in scaling else p.target.num_replicas
        spec.update(rank={"rank": record.rank, "node_rank": record.node_rank,
                          "local_rank": record.local_rank},
                    world_size=max(1, size))
    return spec


def rank_holders(action: reconciler.Start, records: Iterable[ReplicaRecord],
                 views: Iterable[ReplicaView]) -> list[RankHolder]:
    """The live replicas of the version `action` starts: their ranks are taken. One
    stopping, failed or dead (as `views` show them) has freed its rank; one assigned in
    this pass holds its. Pure."""
    freed = {v.replica_id for v in views
             if v.stopping or v.state in ("DEAD", "FAILED", "UNHEALTHY")}
    return [RankHolder(r.node_id, r.rank, r.node_rank, r.local_rank)
            for r in records
            if (r.app, r.deployment, r.version) == (action.app, action.deployment,
                                                    action.version)
            and r.replica_id not in freed and r.rank >= 0]


def assignment_lines(records: Iterable[ReplicaRecord]) -> list[dict[str, Any]]:
    """One log line's fields per (app, deployment, version) among `records`: how many
    replicas were assigned, and how many on each node. Pure."""
    lines: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in records:
        line = lines.setdefault((r.app, r.deployment, r.version), {
            "app": r.app, "deployment": r.deployment, "version": r.version, "count": 0,
            "per_node": {}})
        line["count"] += 1
        line["per_node"][r.node_id] = line["per_node"].get(r.node_id, 0) + 1
    return list(lines.values())


class ReplicaStarter:
    """Places and records new replicas for one term of leadership; keeps each app's
    prepared runtime_env (by build key) for the term."""

    def __init__(self, store: Store, replica_records: ReplicaRecords,
                 books: dict[str, ReplicaBook], *, cluster_id: str,
                 wall_clock: Callable[[], float], packages: PackageCache | None,
                 address: str) -> None:
        self._store = store
        self._records = replica_records
        self._books = books
        self._cluster_id = cluster_id
        self._wall_clock = wall_clock
        self._packages = packages
        self._address = address
        self._envs: dict[str, PreparedEnv] = {}
        #: Why replicas of a deployment could not start, or be placed, since the last
        #: `take_reasons`.
        self._start_errors: dict[Key, str] = {}
        self._unplaced: dict[Key, str] = {}

    def take_reasons(self) -> tuple[dict[Key, str], dict[Key, str]]:
        """Why replicas could not start (their runtime_env or resources were refused) and
        why they could not be placed, by deployment, since the last call."""
        errors, self._start_errors = self._start_errors, {}
        unplaced, self._unplaced = self._unplaced, {}
        return errors, unplaced

    async def prepared_env(self, goal: AppGoal) -> PreparedEnv:
        """The app's runtime_env, prepared (once per build key for the term)."""
        env = self._envs.get(goal.build_key)
        if env is None:
            runtime_env = goal.config.get("runtime_env")
            resolve = None
            if self._packages is not None and names_packages(runtime_env):
                # Normally here already (a deploy uploads to every controller); a controller
                # started after the deploy fetches it from the others.
                peers = await controller_addresses(self._store, skip=self._address)
                resolve = package_resolver(self._packages, peers)
            env = await asyncio.to_thread(prepare, runtime_env, resolve_package=resolve)
            self._envs[goal.build_key] = env
        return env

    async def start(self, starts: list[reconciler.Start], goal: ClusterGoal,
                    views: list[ReplicaView]) -> None:
        """Place each replica of `starts` on a node of `goal` and write the records (the
        nodes' agents start them); `views`: the replicas as the pass viewed them (which
        ranks are free)."""
        nodes = {v.node_id: v for v in node_views(goal.nodes, goal.records.values())}
        records: list[ReplicaRecord] = []
        assigned: set[str] = set()
        # The ranks taken per deployment version: read once, then each new replica's added.
        ranks: dict[tuple[str, str, str], Ranks] = {}
        for done, action in enumerate(starts):
            version = (action.app, action.deployment, action.version)
            taken = ranks.get(version)
            if taken is None:  # not setdefault: its argument would walk every record each time
                taken = ranks[version] = Ranks(rank_holders(action, goal.records.values(),
                                                            views))
            record = await self._assign(action, goal, nodes, taken, assigned)
            if record is not None:
                records.append(record)
            if done % STARTS_PER_TURN == STARTS_PER_TURN - 1:
                # Thousands of starts (a deploy at scale) take seconds of CPU: the loop
                # keeps the lease, the sessions and the route streams going meanwhile.
                await asyncio.sleep(0)
        # A few assignments are logged each at info; many, a line per deployment version.
        each = len(records) <= ASSIGNED_LINES_EACH
        each_at = log.info if each else log.debug
        for i in range(0, len(records), RECORDS_PER_WRITE):
            batch = records[i:i + RECORDS_PER_WRITE]
            # The records are the assignments, and they go before anything runs: a leader
            # taking over after a crash here adopts or forgets them, and never starts a
            # second replica.
            revision = await self._store.commit(puts={REPLICAS_PREFIX + r.replica_id:
                                                      r.to_bytes() for r in batch})
            for record in batch:
                self._records.put(record, revision or 0)
                self._books[record.replica_id] = ReplicaBook()
                controller_metrics().replica_starts(record.app, record.deployment).inc()
                each_at("assigned replica", replica_id=record.replica_id,
                        node_id=record.node_id, version=record.version)
        if not each:
            for fields in assignment_lines(records):
                log.info("assigned replicas", **fields)

    async def _assign(self, action: reconciler.Start, goal: ClusterGoal,
                      nodes: dict[str, NodeView], ranks: Ranks,
                      assigned: set[str]) -> ReplicaRecord | None:
        """The record of one new replica placed on `nodes` (updated with it) and ranked
        by `ranks`, with an id neither recorded nor in `assigned` (added), or None if
        it cannot start now (the reason is kept for its deployment's status)."""
        key = (action.app, action.deployment)
        try:
            await self.prepared_env(goal.goals[action.app])
        except RuntimeEnvError as exc:
            self._start_errors[key] = str(exc)
            return None
        options = goal.plans[key].options
        try:
            request = replica_request(options.get("ray_actor_options"))
        except ValueError as exc:
            self._start_errors[key] = str(exc)
            return None
        placed = place(request, key, nodes.values(),
                       max_replicas_per_node=options.get("max_replicas_per_node"))
        if isinstance(placed, NoFit):
            self._unplaced[key] = placed.reason
            return None
        nodes[placed.node_id] = nodes[placed.node_id].with_replica(
            PlacedReplica(key, dict(request), tuple(placed.gpu_indices)))
        replica_id = new_replica_id(action.app, action.deployment,
                                    lambda rid: rid in goal.records or rid in assigned)
        assigned.add(replica_id)
        rank, node_rank, local_rank = ranks.take(placed.node_id)
        return ReplicaRecord(replica_id, action.app, action.deployment, action.version,
                             pid=0, started_at=self._wall_clock(), cluster_id=self._cluster_id,
                             node_id=placed.node_id, resources=dict(request),
                             gpu_indices=tuple(placed.gpu_indices), rank=rank,
                             node_rank=node_rank, local_rank=local_rank)
