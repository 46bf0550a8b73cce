"""Carrying out the plan's actions: start, stop, reconfigure, forget replicas.

Design. The plan (`weir.controller.reconciler`) is pure; this is where its actions become
records of new replicas (`ReplicaStarter` places them; the nodes' agents start them),
commands on the replicas' sessions, bookkeeping in their books (`ReplicaBook`: a STOP's
deadline, a RECONFIGURE waiting for its acknowledgement) and deletions of records. A
replica whose book changes is touched, so the next pass views it again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import structlog

from weir.config.deployment_options import DEFAULT_DEPLOYMENT_OPTIONS
from weir.controller import reconciler
from weir.controller.cluster_goal import ClusterGoal
from weir.controller.observations import Observations
from weir.controller.observe import ReplicaBook
from weir.controller.reconciler import Plan, ReplicaView
from weir.controller.record_writer import RECORDS_PER_WRITE
from weir.controller.replica_records import ReplicaRecords
from weir.controller.replica_sessions import ReplicaSessions
from weir.controller.replica_starts import ReplicaStarter
from weir.controller.route_changes import RouteChanges
from weir.etcd.keys import REPLICAS_PREFIX
from weir.etcd.store import Store
from weir.protos import weir_pb2 as pb

log = structlog.get_logger("weir.controller")

#: A replica told to stop is killed this long after its graceful shutdown time.
STOP_MARGIN_S = 5.0


class PlanExecutor:
    """Starts the plan's new replicas (`ReplicaStarter`), sends its STOP and RECONFIGURE
    commands and deletes forgotten replicas' records, keeping the replicas' books."""

    def __init__(self, store: Store, starter: ReplicaStarter, replica_records: ReplicaRecords,
                 sessions: ReplicaSessions, observations: Observations,
                 route_changes: RouteChanges, forget_checks: Callable[[str], None],
                 clock: Callable[[], float]) -> None:
        self._store = store
        self._starter = starter
        self._records = replica_records
        self._sessions = sessions
        self._observations = observations
        self._route_changes = route_changes
        #: Drops a replica's health checks (`HealthProber.forget`).
        self._forget_checks = forget_checks
        self._clock = clock

    async def carry_out(self, plan: Plan, goal: ClusterGoal, views: list[ReplicaView],
                        step: Callable[[str], None]) -> None:
        """Carry out `plan` against `goal` (`views`: the replicas as the pass viewed them);
        `step` marks the end of the starts ("start") and of the rest ("execute")."""
        starts = plan.of(reconciler.Start)
        if starts:
            await self._starter.start(starts, goal, views)  # type: ignore[arg-type]
        step("start")
        await self.forget(self.execute(plan.actions, goal))
        step("execute")

    def execute(self, actions: Iterable[reconciler.Action], goal: ClusterGoal) -> list[str]:
        """Carry out `actions` other than starts against `goal`; the replicas whose
        records are to be forgotten (`forget` deletes them together)."""
        return [a.replica_id for a in actions
                if not isinstance(a, reconciler.Start) and self._execute(a, goal)]

    async def forget(self, replica_ids: list[str]) -> None:
        """Delete the records of `replica_ids`, RECORDS_PER_WRITE per transaction (when a
        node is lost, hundreds at once: one round trip each held the pass for seconds)."""
        books = self._observations.books
        for i in range(0, len(replica_ids), RECORDS_PER_WRITE):
            batch = replica_ids[i:i + RECORDS_PER_WRITE]
            # A commit, not a delete: its revision tells the watch's older echoes apart.
            revision = await self._store.commit(deletes=[REPLICAS_PREFIX + r for r in batch])
            for replica_id in batch:
                self._records.delete(replica_id, revision or 0)
                self._sessions.drop(replica_id)
                books.pop(replica_id, None)
                self._forget_checks(replica_id)

    def _execute(self, action: reconciler.Stop | reconciler.Reconfigure | reconciler.Forget,
                 goal: ClusterGoal) -> bool:
        """Carry out `action` (not a Start); True if its replica's record is to be
        forgotten."""
        if isinstance(action, reconciler.Stop):
            return self._stop_replica(action, goal)
        if isinstance(action, reconciler.Reconfigure):
            command = pb.ReplicaCommand(kind=pb.RECONFIGURE,
                                        user_config_json=action.user_config_json)
            if self._sessions.send(action.replica_id, command):
                self._book(action.replica_id, pending_user_config=action.user_config_json)
                log.info("reconfiguring", replica_id=action.replica_id)
            return False
        return isinstance(action, reconciler.Forget)

    def _stop_replica(self, action: reconciler.Stop, goal: ClusterGoal) -> bool:
        """Tell a replica to stop; True if it is to be killed, its record forgotten."""
        record = goal.records.get(action.replica_id)
        if record is None:
            return False
        p = goal.plans.get((record.app, record.deployment))
        options = p.options if p else DEFAULT_DEPLOYMENT_OPTIONS
        graceful = float(options["graceful_shutdown_timeout_s"])
        stop = pb.ReplicaCommand(kind=pb.STOP, graceful_shutdown_timeout_s=graceful)
        if action.kill or not self._sessions.send(action.replica_id, stop):
            # Unassigned, its node's agent kills it.
            log.info("killing replica", replica_id=action.replica_id, reason=action.reason)
            return True
        self._book(action.replica_id, stop_deadline=self._clock() + graceful + STOP_MARGIN_S)
        self._route_changes.replica(action.replica_id, (record.app, record.deployment))
        log.info("stopping replica", replica_id=action.replica_id, reason=action.reason)
        return False

    def _book(self, replica_id: str, **changes: Any) -> None:
        """Change a replica's book; the next pass views it again."""
        books = self._observations.books
        self._observations.touch(replica_id)
        books[replica_id] = replace(books.get(replica_id, ReplicaBook()), **changes)
