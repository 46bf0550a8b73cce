"""Every recorded replica's view, kept across passes and viewed again only where it may
have changed.

Design. At thousands of replicas, viewing every replica on every pass (twice a second) was
the largest part of the leader's pass, and in the steady state almost no view changes. A
view (`weir.controller.observe.observe`) is a function of the replica's record, its
session's last report, its node's record, its last health verdict, its book and the clock.
`Observations` keeps each view and book, and `update` views again only the replicas for
which one of those changed:
- its record, its report or its book: the leader says so (`touch`), and an update that
  changed a book views its replica again at the next (a view shows the book it was made
  from);
- its node's record: the replicas that record lists or fails newly, or no longer; every
  replica on a node that appeared or went;
- its health verdict: the replicas whose failure appeared, changed or cleared;
- the clock: the replicas whose view depends on it (`clock_bound`): those not connected
  (PENDING until its registration times out, or within its node's start grace) and those
  stopping whose deadline has not passed; each at the first update once the clock reached
  one of the times at which its view may change (`clock_due`: its registration timeout,
  its node's start grace, its stop deadline), not at every update (at a failover every
  replica not yet re-registered is one, and viewing 5,000 of them on every pass was most
  of a pass).
So that a change nobody announced does not last, each update also views again a share
of the replicas in turn, in proportion to the time since the last (`sweep_s`,
`weir.controller.sweep`): every
replica recorded when a sweep began is viewed again within `sweep_s` of its start (at
the first update after), and a replica that appears is viewed at once; the pass stays
level-triggered. (It used to view every replica again at one full update every
FULL_READ_S: 294 ms of CPU at 10,000 replicas, over the 200 ms a pass may take; in
shares, the same work is spread over the passes.) A full update views every replica
again.
The views are also kept by deployment (`by_deployment`), and an update notes each
deployment whose views changed beyond their load (`take_changed`): only those are judged,
rolled up and planned again (`weir.controller.deployment_changes`).
`observe_all` is the same view of everything without keeping anything (what `weir
status` reads). No I/O here: the caller passes the records, nodes, reports
and verdicts in.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, ValuesView
from dataclasses import fields, replace
from operator import attrgetter

from weir.controller.nodes import AGENT_START_GRACE_S, replica_liveness
from weir.controller.observe import REGISTER_TIMEOUT_S, ReplicaBook, SessionReport, observe
from weir.controller.reconciler import ReplicaView
from weir.controller.sweep import Sweep
from weir.etcd.records import NodeRecord, ReplicaRecord

ReportOf = Callable[[str], SessionReport | None]
Key = tuple[str, str]


def view_replica(record: ReplicaRecord, report: SessionReport | None,
                 nodes: Mapping[str, NodeRecord], book: ReplicaBook, health_failure: str,
                 *, wall_now: float, mono_now: float) -> tuple[ReplicaView, ReplicaBook]:
    """One replica viewed now from all it depends on, and its book updated."""
    liveness = replica_liveness(record, nodes, wall_now, listed_before=book.listed)
    view, new_book = observe(record, report, alive=liveness.alive,
                             gone_reason=liveness.reason, book=book,
                             health_failure=health_failure, wall_now=wall_now,
                             mono_now=mono_now)
    listed = book.listed or liveness.listed
    return view, new_book if new_book.listed == listed else replace(new_book, listed=listed)


def observe_all(records: Mapping[str, ReplicaRecord], report_of: ReportOf,
                nodes: Mapping[str, NodeRecord], books: Mapping[str, ReplicaBook],
                failures: Mapping[str, str], *, wall_now: float, mono_now: float
                ) -> tuple[list[ReplicaView], dict[str, ReplicaBook]]:
    """Every recorded replica viewed now, and the books updated (nothing kept)."""
    views, new_books = [], {}
    for rid, record in records.items():
        view, new_books[rid] = view_replica(
            record, report_of(rid), nodes, books.get(rid, ReplicaBook()),
            failures.get(rid, ""), wall_now=wall_now, mono_now=mono_now)
        views.append(view)
    return views, new_books


#: A view's fields but its load, as a tuple.
_beyond_load = attrgetter(*(f.name for f in fields(ReplicaView) if f.name != "ongoing"))


def differs_beyond_load(before: ReplicaView, after: ReplicaView) -> bool:
    """Whether two views of a replica differ in more than its load (`ongoing`): what
    judging, the status and the plan read (the load is the autoscaler's alone, and changes
    with every request)."""
    # Field by field in one tuple each (in C), no copy: most views compared are the same.
    return _beyond_load(before) != _beyond_load(after)


def clock_bound(view: ReplicaView, report: SessionReport | None) -> bool:
    """Whether time alone may change `view`: a replica not connected (its registration or
    its node's start grace may time out) or stopping before its deadline."""
    return report is None or not report.connected or (view.stopping and not view.stop_overdue)


def clock_due(record: ReplicaRecord, book: ReplicaBook, *, wall_now: float,
              mono_now: float) -> tuple[float | None, float | None]:
    """The next wall time, and monotonic time, at which the view of a clock-bound replica
    (`clock_bound`) may change with nothing else changing: its node's start grace ends,
    its registration times out (`weir.controller.observe`), or its stop deadline passes.
    Times already past change nothing more; None: none to come. A time equal to now is
    still to come (a view changes at it or just after it: the replica is viewed at it,
    and again once it is past). Every time that may apply is given, whether it does or
    not: a view made again for nothing is the same view. Pure."""
    first_seen = book.first_seen if book.first_seen is not None else wall_now
    walls = [t for t in (record.started_at + AGENT_START_GRACE_S,
                         max(record.started_at, first_seen) + REGISTER_TIMEOUT_S)
             if t >= wall_now]
    stop = book.stop_deadline
    return (min(walls) if walls else None), (stop if stop is not None and stop >= mono_now
                                             else None)


def node_changes(before: Mapping[str, NodeRecord], now: Mapping[str, NodeRecord]
                 ) -> tuple[set[str], set[str]]:
    """What changed between two reads of the nodes: the replicas a node lists or fails
    newly or no longer (or whose failure reads differently), and the nodes that appeared
    or went (all of whose replicas may have changed)."""
    replicas: set[str] = set()
    nodes: set[str] = set()
    for node_id in before.keys() | now.keys():
        old, new = before.get(node_id), now.get(node_id)
        if old is None or new is None:
            nodes.add(node_id)
        elif old != new:
            replicas.update(old.replicas.keys() ^ new.replicas.keys())
            replicas.update(r for r in old.failed.keys() | new.failed.keys()
                            if old.failed.get(r) != new.failed.get(r))
    return replicas, nodes


class Observations:
    """Each recorded replica's view and book (see the module docstring)."""

    def __init__(self) -> None:
        self.views: dict[str, ReplicaView] = {}
        #: Each replica's book (the leader updates it between passes, and `touch`es it).
        self.books: dict[str, ReplicaBook] = {}
        self._touched: set[str] = set()
        #: Each clock-bound replica's `clock_due` times, and the same as heaps of (time,
        #: replica id) (stale entries among them: found so when they come up).
        self._clock_due: dict[str, tuple[float | None, float | None]] = {}
        self._wall_due: list[tuple[float, str]] = []
        self._mono_due: list[tuple[float, str]] = []
        self._nodes: Mapping[str, NodeRecord] = {}
        self._failures: dict[str, str] = {}
        #: The replicas the last update viewed again (or dropped): only their views may
        #: differ from the update's before.
        self.reviewed: set[str] = set()
        #: Those of them the sweep took (`sweep_s`), whatever changed or not.
        self.swept: set[str] = set()
        self._sweep: Sweep[str] = Sweep()
        #: Each deployment's views by replica id (what judging, status and the plan read).
        self.by_deployment: dict[Key, dict[str, ReplicaView]] = {}
        #: The deployments whose views changed beyond their load (`differs_beyond_load`),
        #: or gained or lost a replica, since the last `take_changed`.
        self._changed: set[Key] = set()

    def touch(self, replica_id: str) -> None:
        """The replica's record, report or book changed: view it again at the next update."""
        self._touched.add(replica_id)

    def groups(self) -> dict[Key, ValuesView[ReplicaView]]:
        """Each deployment's views as the last update left them (live: a later update
        changes them)."""
        return {key: group.values() for key, group in self.by_deployment.items()}

    def take_changed(self) -> set[Key]:
        """The deployments whose views changed beyond their load, or that gained or lost a
        replica, since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def update(self, records: Mapping[str, ReplicaRecord], report_of: ReportOf,
               nodes: Mapping[str, NodeRecord], failures: Mapping[str, str], *,
               wall_now: float, mono_now: float, full: bool,
               sweep_s: float = 0.0) -> list[ReplicaView]:
        """Every recorded replica's view now (in the records' order), viewing again only
        those that may have changed since the last update; all of them if `full`; with
        `sweep_s`, also the sweep's share due by `mono_now`, so that every replica recorded
        when a sweep began is viewed again within `sweep_s` of its start."""
        self.swept = set()
        if full:
            due: set[str] = set(records) | set(self.views)
        else:
            if sweep_s > 0:
                self.swept = self._sweep.share(records.keys(), mono_now, sweep_s)
            due = self._touched | self._clock_due_now(wall_now, mono_now)
            on_nodes, changed_nodes = node_changes(self._nodes, nodes)
            due |= on_nodes
            if changed_nodes:
                due.update(rid for rid, r in records.items() if r.node_id in changed_nodes)
            due.update(r for r in failures.keys() | self._failures.keys()
                       if failures.get(r) != self._failures.get(r))
            # Records come and go through `touch` too; these set operations (in C) make
            # sure of it at little cost.
            due |= records.keys() ^ self.views.keys()
            due |= self.swept
        self._touched = set()
        self.reviewed = due
        for rid in due:
            record = records.get(rid)
            before = self.views.get(rid)
            if record is None:
                if before is not None:
                    self._ungroup(before)
                self.views.pop(rid, None)
                self.books.pop(rid, None)
                self._clock_due.pop(rid, None)
                continue
            report = report_of(rid)
            book = self.books.get(rid, ReplicaBook())
            view, self.books[rid] = view_replica(
                record, report, nodes, book, failures.get(rid, ""), wall_now=wall_now,
                mono_now=mono_now)
            self.views[rid] = view
            key = (view.app, view.deployment)
            if before is None or (before.app, before.deployment) != key:
                if before is not None:
                    self._ungroup(before)
                self._changed.add(key)
            elif differs_beyond_load(before, view):
                self._changed.add(key)
            self.by_deployment.setdefault(key, {})[rid] = view
            if self.books[rid] is not book:
                # A view shows the book as it was (`last_state`): the next one shows this.
                self._touched.add(rid)
            if clock_bound(view, report):
                self._wait_for_clock(rid, clock_due(record, self.books[rid],
                                                    wall_now=wall_now, mono_now=mono_now))
            else:
                self._clock_due.pop(rid, None)
        self._nodes, self._failures = nodes, dict(failures)
        return [self.views[rid] for rid in records]

    def _wait_for_clock(self, replica_id: str, due: tuple[float | None, float | None]
                        ) -> None:
        """View `replica_id` again when the clock reaches `due` (wall, monotonic)."""
        if self._clock_due.get(replica_id) == due:
            return
        self._clock_due[replica_id] = due
        wall, mono = due
        if wall is not None:
            heapq.heappush(self._wall_due, (wall, replica_id))
        if mono is not None:
            heapq.heappush(self._mono_due, (mono, replica_id))

    def _clock_due_now(self, wall_now: float, mono_now: float) -> set[str]:
        """The clock-bound replicas one of whose times came (taken off the heaps)."""
        due: set[str] = set()
        for heap, now, index in ((self._wall_due, wall_now, 0),
                                 (self._mono_due, mono_now, 1)):
            while heap and heap[0][0] <= now:
                at, rid = heapq.heappop(heap)
                times = self._clock_due.get(rid)
                if times is not None and times[index] == at:
                    # Viewed now, its next times are taken anew (the same ones, if they
                    # are still to come).
                    del self._clock_due[rid]
                    due.add(rid)
            # Stale entries (times moved again and again) would pile up: keep the heap
            # within twice the replicas waiting.
            if len(heap) > 2 * len(self._clock_due) + 64:
                heap[:] = [e for e in heap
                           if (t := self._clock_due.get(e[1])) is not None and t[index] == e[0]]
                heapq.heapify(heap)
        return due

    def _ungroup(self, view: ReplicaView) -> None:
        """Take a replica's view out of its deployment's (which changed by it)."""
        key = (view.app, view.deployment)
        group = self.by_deployment.get(key)
        if group is not None:
            group.pop(view.replica_id, None)
            if not group:
                del self.by_deployment[key]
        self._changed.add(key)
