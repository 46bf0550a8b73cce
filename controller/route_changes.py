"""What the leader's next route table is, as what changed since the last one.

Design. The table is a pure function of the goal and the replicas' reports
(`weir.controller.routing`), but at thousands of replicas building it whole for every
report would be most of the leader's work. So the leader says which replicas' targets may
have changed (`replica`: a report, a record written or deleted, a health check failed or
recovered, a STOP sent, the sweep's share of each pass), and `current_table` looks at only
those, giving the publisher `TargetChanges`. The whole table is built again when the
routes or a deployment's options change, when a replica unknown to the records reported,
and every WHOLE_TABLE_S: what nobody said is caught within that long.

A replica is routed to while its session is connected and RUNNING, it passes its health
checks and it is not stopping (`routable`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from weir.controller.cluster_goal import ClusterGoal
from weir.controller.observe import ReplicaBook
from weir.controller.replica_sessions import ReplicaSessions
from weir.controller.route_publisher import RoutePublisher, TargetChanges
from weir.controller.routing import build_route_table
from weir.etcd.records import ReplicaRecord
from weir.protos import weir_pb2 as pb

Key = tuple[str, str]

#: How often the whole route table is built and compared with the published one, besides
#: the replicas swept: what no replica's change says (none known) is caught within this.
WHOLE_TABLE_S = 60.0


class RouteChanges:
    """The replicas whose targets may have changed since the last table, and the next
    table made from them. `goal` gives the goal of the leader's last pass; `books` and
    `failures` are the leader's (kept, not copied)."""

    def __init__(self, publisher: Callable[[], RoutePublisher], goal: Callable[[], ClusterGoal],
                 sessions: ReplicaSessions, books: Mapping[str, ReplicaBook],
                 failures: Mapping[str, str], clock: Callable[[], float]) -> None:
        self._publisher = publisher
        self._goal = goal
        self._sessions = sessions
        self._books = books
        self._failures = failures
        self._clock = clock
        #: The replicas whose targets may have changed, with their deployments (None:
        #: build the table whole); what the last pass saw of the rest of the table
        #: (routes, deployments' options) and of the failed health checks.
        self._changed: dict[str, Key] | None = None
        self._shell: pb.RouteTable | None = None
        self._last_whole_table: float | None = None
        self._failing: set[str] = set()

    def replica(self, replica_id: str, key: Key) -> None:
        """The replica's target may have changed: the next table looks at it again."""
        if self._changed is not None:
            self._changed[replica_id] = key

    def everything(self) -> None:
        """The next table is built whole."""
        self._changed = None

    def note_pass(self, changed: dict[str, Key], swept: Iterable[str]) -> None:
        """What a pass changed of the table: `changed` (the replicas whose records were
        written or deleted, or that were told to stop, with their deployments), those
        whose health checks failed or recovered, and those the sweep took (`swept`: a
        change missed here lasts at most a sweep); the whole table if the routes or a
        deployment's options changed, and every WHOLE_TABLE_S."""
        goal = self._goal()
        changed.update((rid, (r.app, r.deployment)) for rid in swept
                       if (r := goal.records.get(rid)) is not None)
        failing = set(self._failures)
        changed.update((rid, (r.app, r.deployment)) for rid in failing ^ self._failing
                       if (r := goal.records.get(rid)) is not None)
        self._failing = failing
        shell = build_route_table(goal.goals, goal.plans, [], goal.http_options)
        now = self._clock()
        if (shell != self._shell or self._last_whole_table is None
                or now - self._last_whole_table >= WHOLE_TABLE_S):
            self._changed = None
            self._last_whole_table = now
        elif self._changed is not None:
            self._changed.update(changed)
        self._shell = shell

    def current_table(self) -> pb.RouteTable | TargetChanges:
        """The table now: whole after a change of routes or options (or every
        WHOLE_TABLE_S), else the targets of only the replicas that changed since the last
        table."""
        changed, self._changed = self._changed, {}
        publisher = self._publisher()
        if changed is None or not all(publisher.has(k) for k in set(changed.values())):
            return self.whole_table()
        goal = self._goal()
        targets: dict[Key, dict[str, pb.ReplicaTarget | None]] = {}
        for rid, key in changed.items():
            record = goal.records.get(rid)
            routable = self.routable(rid, record) if record is not None else None
            current = publisher.target(key, rid)
            if routable is None:
                if current is not None:
                    targets.setdefault(key, {})[rid] = None
            elif (current is None or current.address != routable[3]
                  or current.ongoing != routable[4] or not self._same_models(current)):
                # Most reports repeat what the table has: a message only for a change.
                targets.setdefault(key, {})[rid] = pb.ReplicaTarget(
                    replica_id=rid, address=routable[3], ongoing=routable[4])
        return TargetChanges(self._routes_shell(), targets)

    def whole_table(self) -> pb.RouteTable:
        """The whole table."""
        goal = self._goal()
        running = [t for rid, record in goal.records.items()
                   if (t := self.routable(rid, record)) is not None]
        return build_route_table(goal.goals, goal.plans, running, goal.http_options)

    def routable(self, rid: str, record: ReplicaRecord
                 ) -> tuple[str, str, str, str, int] | None:
        """(replica_id, app, deployment, address, ongoing) of a replica to route to, None
        if it is not RUNNING, failed its health check or is stopping."""
        # Read the session's last report as it is (no plain-data copy): this runs for
        # every replica of every whole table.
        sess = self._sessions.sessions.get(rid)
        if sess is None or not sess.connected or sess.report.state != pb.RUNNING:
            return None
        book = self._books.get(rid)
        if rid in self._failures or (book is not None and book.stop_deadline is not None):
            return None
        return (rid, record.app, record.deployment, sess.report.address, sess.report.ongoing)

    def _same_models(self, target: pb.ReplicaTarget) -> bool:
        """Whether `target` shows the multiplexed models its replica holds now."""
        held = self._sessions.model_ids(target.replica_id)
        if held is None:
            return not target.multiplexed
        return target.multiplexed and tuple(target.multiplexed_model_ids) == held

    def _routes_shell(self) -> pb.RouteTable:
        """The routes and http options of the table now (no replicas)."""
        goal = self._goal()
        return build_route_table(goal.goals, goal.plans, [], goal.http_options, only=())
