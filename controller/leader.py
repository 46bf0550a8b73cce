"""The leader's work: one reconcile loop over pure steps, and small executors around it.

Design. Every pass runs `refresh → observe → judge → plan → execute`:
- refresh: read the goal from etcd (`read_goal`); nothing of the goal is remembered across
  passes. The replica records are kept from a watch and read whole every FULL_READ_S
  (`weir.controller.record_keeper`); each pass views again the share of the replicas due
  in a sweep of SWEEP_S, so the pass stays level-triggered without viewing thousands of
  replicas twice a second;
- observe (`weir.controller.observe`): each record, its session's last report, whether its
  process lives and its last health check become a `ReplicaView`;
- judge (`weir.controller.health`): failures, crash-loop backoff and recovery per deployment
  version; which apps have been RUNNING since their last deploy. Judging, the status
  roll-up and the plan are done again only for the deployments whose replicas or inputs
  changed since the last pass, the others taken as it left them
  (`weir.controller.deployment_changes`, which says why that is what doing them all
  would give, and sweeps every deployment again within SWEEP_S);
- scale (`weir.controller.autoscaler`): autoscaled deployments' replica counts from their
  load (replicas' ongoing counts, callers' queued counts: `CallerQueues`);
- plan (`weir.controller.reconciler`): the actions that close the gap;
- execute: start (`ReplicaStarter`), stop, reconfigure, forget replicas
  (`PlanExecutor`): etcd writes, the launcher, commands on the sessions.
The steps in the middle are pure functions over plain data with the clock passed in. The
I/O lives in executors: `AppBuilder` (imports apps in a child process), `ReplicaStarter`
(places new replicas and writes their records), `ReplicaSessions` (the replicas'
streams), `RoutePublisher` (route tables to proxies and handles, made by `RouteChanges`
from what changed), `HealthProber` (health checks over the replicas' sessions, of the
replicas `CheckTargets` lists) and `PlanExecutor` (the plan's actions).

Failover. A leader that just took over starts from the records: replicas still running
re-register within a heartbeat and are adopted; records whose process is gone are
forgotten; no replica is started twice, because starting is bounded by the target count
over records, and a record is written before its launch. The route table waits until every
recorded replica has re-registered, or none has for ADOPTION_GRACE_S (`adoption_over`).

Reads never change state (`weir.controller.leader_reads`): `status()` rolls up the replicas
as the last pass viewed them, `replicas()` views them afresh, neither keeps what it saw.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog

from weir.cancellation import cancel_all, event_within
from weir.controller import leader_reads, reconciler
from weir.controller.app_builder import AppBuilder, needs_build
from weir.controller.autoscaler import ScalingState, scale_targets, with_decisions
from weir.controller.cluster_goal import ClusterGoal, ParsedNodes, read_goal
from weir.controller.deployment_changes import (
    DeploymentChanges,
    PlanInputs,
    deployment_inputs,
    unsettled_deployments,
)
from weir.controller.deployment_status import StatusInfo
from weir.controller.event_log import EventLog, node_events, status_events
from weir.controller.gauges import Gauges
from weir.controller.health import DeploymentHealth, judge, may_start
from weir.controller.health_prober import HealthProber
from weir.controller.nodes import update_dead_nodes
from weir.controller.observations import Observations
from weir.controller.observe import ReplicaBook
from weir.controller.pass_stats import PassTimes
from weir.controller.plan_executor import PlanExecutor
from weir.controller.queue_reports import CallerQueues
from weir.controller.reconciler import ReplicaView
from weir.controller.record_keeper import RecordKeeper
from weir.controller.record_writer import RecordWriter
from weir.controller.registration import Registration
from weir.controller.replica_records import ReplicaRecords
from weir.controller.replica_sessions import ReplicaSessions, ReportChange
from weir.controller.replica_starts import ReplicaStarter, replica_spec
from weir.controller.route_changes import RouteChanges
from weir.controller.route_publisher import RoutePublisher
from weir.etcd.records import NodeRecord, ReplicaRecord
from weir.etcd.store import Store, StoreError
from weir.metrics import controller_metrics
from weir.packages.cache import PackageCache
from weir.protos import weir_pb2 as pb

log = structlog.get_logger("weir.controller")

TICK_S = 0.5
#: Passes start at least this long after the last one ended, however often woken
#: (`pass_gap`).
PASS_GAP_S = 0.05
#: A new leader's adoption is over once every recorded replica registered again, or once
#: none did for ADOPTION_GRACE_S, or ADOPTION_MAX_S after the term began (`adoption_over`).
ADOPTION_GRACE_S = 3.0
ADOPTION_MAX_S = 30.0
#: Each pass views again a share of the replicas in turn, whatever changed, so that every
#: replica is viewed again once in this long (`Observations`), and looks at their route
#: targets and health checks again: the level-triggered check spread over the passes. (A
#: full pass every FULL_READ_S did it all at once: 294 ms of CPU at 10,000 replicas.)
SWEEP_S = 5.0

Key = tuple[str, str]


def adoption_over(every_registered: bool, waited_s: float, quiet_s: float) -> bool:
    """Whether a new leader's adoption is over: every recorded replica registered again
    (`every_registered`), or none did or was registering for ADOPTION_GRACE_S (`quiet_s`:
    since the last one, or since the term began), or the term is ADOPTION_MAX_S old
    (`waited_s`). Until then the proxies keep the last leader's table, whole, and the
    autoscaler waits: at 10,000 replicas on two cores none had registered 3 s into the
    term (their registrations all under way at once), and a grace counted from the term's
    start published a table without them, sending every request to a 503 while every
    replica was up. Pure."""
    return every_registered or quiet_s > ADOPTION_GRACE_S or waited_s > ADOPTION_MAX_S


def pass_gap(took: float) -> float:
    """How long after a pass that took `took` s (wall) the next may start, however often
    woken: PASS_GAP_S, or as long as the pass took, up to TICK_S. Woken back to back by
    a flood of changes (every replica registering at a failover), passes of hundreds of
    ms at thousands of replicas held the loop most of the time, and the registrations
    that woke them waited: at 5,000, 800 a second came in between. Passes now take at
    most half the loop while woken back to back. Pure."""
    return min(max(PASS_GAP_S, took), TICK_S)


class Leader:
    """The leading controller's loop; one instance per term of leadership."""

    def __init__(self, store: Store, *, python_executable: str, cluster_id: str = "",
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 packages: PackageCache | None = None, address: str = "") -> None:
        self.store = store
        #: This controller's package cache (what deploys uploaded here) and its address
        #: (so that a missing package is fetched from the other controllers).
        self.packages = packages
        self.address = address
        self.cluster_id = cluster_id
        self.clock = clock
        self.wall_clock = wall_clock
        self.started = clock()
        #: Every recorded replica registered (or the grace passed): latched, logged once.
        self._adoption_over = False
        #: How many replicas had registered when `_adopted` last looked, and since when.
        self._registered_seen = 0
        self._registered_since = self.started
        #: The replica records, from a watch between full reads (`self.goal.records`).
        self.replica_records = ReplicaRecords()
        self.goal = ClusterGoal(records=self.replica_records.records)
        #: The node records as last parsed (parsed again only when written).
        self.parsed_nodes = ParsedNodes()
        #: Keeps them: from a watch, read whole every FULL_READ_S.
        self.keeper = RecordKeeper(store, self.replica_records, clock)
        #: Registrations' pid writes, coalesced into transactions (`Registration`).
        self.writer = RecordWriter(store, self.replica_records.put)
        #: Each replica's view and book, viewed again only where an input changed.
        self.observations = Observations()
        self.books: dict[str, ReplicaBook] = self.observations.books
        self.registration = Registration(
            store, self.replica_records, self.writer, self.spec_for,
            lambda rid: self.books.get(rid, ReplicaBook()).stop_deadline is not None)
        #: The replicas whose records changed since the last pass (for the route table).
        self._records_changed: dict[str, Key] = {}
        self.health: dict[Key, DeploymentHealth] = {}
        #: The autoscaler's memory of each autoscaled deployment, for this term only.
        self.scaling: dict[Key, ScalingState] = {}
        #: Each deployment's status as of the last pass (a state machine: the next one
        #: depends on it; `weir.controller.deployment_status`).
        self.statuses: dict[Key, StatusInfo] = {}
        #: Each deployment's replicas by state as of the last pass, and what the passes
        #: did with each deployment (only those that changed are done again).
        self.counts: dict[Key, dict[str, int]] = {}
        self.deployment_changes = DeploymentChanges()
        #: The gauges of the last pass (made again only where a deployment changed).
        self.gauges = Gauges()
        #: Nodes this term has seen, and those found gone since (with when).
        self.seen_nodes: dict[str, NodeRecord] = {}
        self.dead_nodes: dict[str, tuple[NodeRecord, float]] = {}
        #: Set when this term ends: every session and route stream of this leader closes.
        self.ended = asyncio.Event()
        self._wake = asyncio.Event()
        self.sessions = ReplicaSessions(self.ended, self._on_report,
                                        lambda rid, answer: self.prober.answered(rid, answer))
        self.queues = CallerQueues(self.ended, clock, self._on_new_demand)
        # Each replica's multiplexed models reach the route table from its session.
        self.prober = HealthProber(self.wake, clock, self.sessions.connected,
                                   self.sessions.report_of)
        #: What changed of the route table since the last one, and the next table.
        self.route_changes = RouteChanges(lambda: self.routes, lambda: self.goal,
                                          self.sessions, self.books, self.prober.failures,
                                          clock)
        self.routes = RoutePublisher(self.route_changes.current_table, self._adopted,
                                     self.ended, model_ids=self.sessions.model_ids)
        self.starter = ReplicaStarter(store, self.replica_records, self.books,
                                      cluster_id=cluster_id, wall_clock=wall_clock,
                                      packages=packages, address=address)
        #: Carries out the plan: starts, stops, reconfigurations, forgettings.
        self.executor = PlanExecutor(store, self.starter, self.replica_records, self.sessions,
                                     self.observations, self.route_changes,
                                     self.prober.forget, clock)
        self.builder = AppBuilder(store, python_executable, self.starter.prepared_env,
                                  self.wake)
        #: Recent events for the status page; the last pass's statuses, to diff against.
        self.events = EventLog(store, wall_clock)
        self._last_apps: dict[str, Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        #: The current pass's steps, each with when it ended (`_step`).
        self.pass_times = PassTimes(clock)

    @property
    def records(self) -> dict[str, ReplicaRecord]:
        """The replica records as of the last pass."""
        return self.goal.records

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the goal and the records, then run the loops."""
        revision = await self.keeper.load()
        self.goal = await read_goal(self.store, self.replica_records, self.parsed_nodes)
        loop = asyncio.get_running_loop()
        # The term's event is written beside the loops, never in the way of a takeover.
        self._tasks = [loop.create_task(self.keeper.watch(revision + 1)),
                       loop.create_task(self._reconcile_loop()),
                       loop.create_task(self.routes.run()),
                       loop.create_task(self.events.note(
                           "leader", f"controller {self.address or '(local)'} leads"))]
        log.info("leading", apps=sorted(self.goal.goals), replicas=len(self.goal.records))

    async def stop(self) -> None:
        """End this term: stop loops, builds and checks (replicas keep running)."""
        # Until every loop has ended: a pass made after this term's lease is gone would
        # act without it (`weir.cancellation` says how a loop can outlive one cancel).
        await cancel_all(self._tasks)
        await self.builder.stop()
        await self.prober.stop()
        await self.writer.stop()
        self.sessions.end()
        # End every replica session and route stream: their peers find the next leader.
        self.ended.set()

    def wake(self) -> None:
        """Reconcile now (the goal or a replica changed)."""
        self._wake.set()

    def _on_report(self, replica_id: str, change: ReportChange) -> None:
        if change == "state":
            self.wake()
        record = self.goal.records.get(replica_id)
        key = (record.app, record.deployment) if record is not None else None
        # A view's load is read only by the autoscaler: a change of load alone (most
        # reports, at thousands of replicas) views the replica again only if it autoscales.
        if change != "load" or key is None or key in self.goal.autoscaling:
            self.observations.touch(replica_id)
        if key is None:
            self.route_changes.everything()
        else:
            self.route_changes.replica(replica_id, key)
        self.routes.mark_dirty(load_only=change != "state")

    def _on_new_demand(self, keys: set[Key]) -> None:
        # Requests held for a deployment at zero: start a replica now, not at the next tick.
        if any(k in self.scaling and self.scaling[k].target == 0 for k in keys):
            self.wake()

    # ------------------------------------------------------------------ the loop

    async def _reconcile_loop(self) -> None:
        metrics = controller_metrics()
        while True:
            began, cpu_began = time.perf_counter(), time.process_time()
            # Cleared before the pass, not after it: a wake that comes while the pass runs
            # (a replica turning RUNNING as the pass awaits etcd) must start the next pass
            # once PASS_GAP_S is over, not wait out the tick.
            self._wake.clear()
            try:
                await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, StoreError):
                    metrics.etcd_errors("reconcile").inc()
                log.error("reconcile pass failed", exc_info=True)
            took = time.perf_counter() - began
            metrics.loops.inc()
            metrics.loop_duration.observe(took)
            self.pass_times.ended(took, time.process_time() - cpu_began,
                                  len(self.goal.records))
            await event_within(self._wake, TICK_S)
            # Woken at once again and again (every replica registering at a failover,
            # every state change of a rolling update), passes would hold the loop back to
            # back: the sessions that wake them need it more.
            await asyncio.sleep(max(0.0, began + took + pass_gap(took) - time.perf_counter()))

    async def reconcile_once(self) -> None:
        """One level-triggered pass: refresh, observe, judge, plan, execute."""
        self.pass_times.begin()
        await self.keeper.refresh()
        self.pass_times.step("records")
        self.goal = await read_goal(self.store, self.replica_records, self.parsed_nodes)
        self.pass_times.step("goal")
        dead_before = self.dead_nodes
        self.dead_nodes = update_dead_nodes(self.dead_nodes, self.seen_nodes, self.goal.nodes,
                                            self.wall_clock())
        self.seen_nodes = {**self.seen_nodes, **self.goal.nodes}
        self.builder.ensure(self.goal.goals)
        views = self._observe_changes()
        groups = self.observations.groups()
        self.deployment_changes.note(self.observations.take_changed())
        self.pass_times.step("observe")
        # A step may walk thousands of replicas (a rolling update of a big deployment, a
        # full read): the lease's keep-alive (and the route pushes) get a turn between
        # steps, or the leader could lose its lease in the middle of a rolling update.
        await asyncio.sleep(0)
        now = self.clock()
        targets = with_decisions(self.goal.targets, self.scaling)
        errors, unplaced = self.starter.take_reasons()
        frozen = frozenset(n for n, g in self.goal.goals.items() if needs_build(g))
        inputs = deployment_inputs(targets, groups, self.goal.autoscaling.keys(), frozen,
                                   errors, unplaced)
        # Only the deployments whose replicas or inputs changed are judged, rolled up and
        # planned again (`weir.controller.deployment_changes`).
        unchanged = self.deployment_changes.unchanged(inputs, now, SWEEP_S)
        health_before, statuses_before = self.health, self.statuses
        self.health = judge(targets, groups, self.health, now=now, start_errors=errors,
                            unplaced=unplaced, unchanged=unchanged)
        rollup = leader_reads.rollup(self, groups, unchanged)
        apps, self.statuses, self.counts = rollup.doc, rollup.statuses, rollup.counts
        self.pass_times.step("judge")
        wall = self.wall_clock()
        await self.events.record(*status_events(self._last_apps, apps, wall),
                                 *node_events(dead_before, self.dead_nodes, wall))
        self._last_apps = apps
        self.pass_times.step("events")
        # Until the replicas re-registered after a failover, their load is unknown.
        targets, self.scaling, changes = scale_targets(
            targets, self.goal.autoscaling, groups, self.queues.queued(), self.scaling,
            now=now, deciding=self.routes.ready or self._adopted())
        for c in changes:
            log.info("autoscaling", app=c.key[0], deployment=c.key[1], replicas=c.new,
                     previous=c.old, reason=c.reason)
        await asyncio.sleep(0)
        allowed = may_start(self.health, targets, now)
        plan_inputs = {k: PlanInputs(targets.get(k), k in allowed) for k in inputs}
        plan_unchanged = self.deployment_changes.plan_unchanged(unchanged, plan_inputs)
        plan = reconciler.plan(targets.values(), groups, may_start=allowed,
                               frozen_apps=frozen, unchanged=plan_unchanged)
        self.deployment_changes.passed(inputs, plan_inputs, unsettled_deployments(
            (k for k in inputs if k not in plan_unchanged), health_before, self.health,
            statuses_before, self.statuses, plan.deployments))
        self.pass_times.step("plan")
        await asyncio.sleep(0)
        await self.executor.carry_out(plan, self.goal, views, self.pass_times.step)
        self.prober.follow(self.goal.plans, views, self.observations.reviewed,
                           self.observations.views)
        self.pass_times.step("checks")
        changed, self._records_changed = self._records_changed, {}
        changed.update(self.replica_records.take_changed())
        self.route_changes.note_pass(changed, self.observations.swept)
        self.routes.mark_dirty()
        self.pass_times.step("routes")
        make_snapshot = self.gauges.update(groups, unchanged, targets, self.prober.failures,
                                           self.goal.autoscaling.keys())
        if make_snapshot is not None:
            controller_metrics().snapshot_later(make_snapshot)
        self.pass_times.step("gauges")

    def _observe_changes(self) -> list[ReplicaView]:
        """Every recorded replica viewed now, keeping the views and books: only those
        whose inputs changed are viewed again, and the sweep's share of the rest."""
        changed = self.replica_records.take_changed()
        for rid in changed:
            self.observations.touch(rid)
        self._records_changed.update(changed)
        return self.observations.update(
            self.goal.records, self.sessions.report_of, self.goal.nodes,
            self.prober.failures, wall_now=self.wall_clock(), mono_now=self.clock(),
            full=False, sweep_s=SWEEP_S)

    # ------------------------------------------------------------------ sessions

    def spec_for(self, record: ReplicaRecord) -> dict[str, Any] | None:
        """What a replica runs: None if its version is no longer wanted."""
        return replica_spec(record, self.goal, self.scaling)

    def session(self, reports: AsyncIterator[pb.ReplicaReport]
                ) -> AsyncIterator[pb.ReplicaCommand]:
        """Hold one replica's session: take its reports, send its commands."""
        return self.sessions.hold(reports, self.registration.admit)

    # ------------------------------------------------------------------ routes

    def _adopted(self) -> bool:
        """Whether this term's adoption is over (`adoption_over`; logged once, when first
        true)."""
        if self._adoption_over:
            return True
        now, sessions = self.clock(), self.sessions.sessions
        # Registrations under way count as progress: all of them start at once at a
        # failover, and none may be done for seconds.
        if len(sessions) != self._registered_seen or self.sessions.registering:
            self._registered_seen, self._registered_since = len(sessions), now
        waited = now - self.started
        # Counted first: a walk of every record each time would cost O(N) per look.
        every = (len(sessions) >= len(self.goal.records)
                 and all(rid in sessions for rid in self.goal.records))
        if adoption_over(every, waited, now - self._registered_since):
            self._adoption_over = True
            log.info("replicas adopted" if every else "adoption grace over",
                     registered=len(self.sessions.sessions), recorded=len(self.goal.records),
                     after_s=round(waited, 2))
        return self._adoption_over

    def watch_routes(self, accepts_deltas: bool = False,
                     compact: bool = False) -> AsyncIterator[pb.RouteTable]:
        """The route table now (once adopted) and on every change (as deltas after the
        first table, if the subscriber `accepts_deltas`; `compact`: with changes of load
        alone as positions and counts)."""
        return self.routes.watch(accepts_deltas, compact)

    async def report_queues(self, reports: AsyncIterator[pb.QueueReport]) -> None:
        """Take one caller's queue reports until it hangs up or this term ends."""
        await self.queues.hold(reports)

    # ------------------------------------------------------------------ reads

    @property
    def failures(self) -> dict[str, str]:
        """Why each replica that failed its health checks failed them."""
        return self.prober.failures

    def status(self) -> dict[str, Any]:
        """The `applications:` document of `weir status` (changes nothing;
        `leader_reads.status_document`)."""
        return leader_reads.status_document(self)

    def replicas(self) -> list[dict[str, Any]]:
        """Every replica with its state, for `ListReplicas` (changes nothing)."""
        return leader_reads.replica_list(self)

    def nodes(self) -> list[dict[str, Any]]:
        """Every node with its resources and replicas, for `weir status` (changes nothing)."""
        return leader_reads.node_list(self)
