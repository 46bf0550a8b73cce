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
  stopping whose deadline has not passed.
So that a change nobody announced does not last, each update also views again a share
of the replicas in turn, in proportion to the time since the last (`sweep_s`): every
replica recorded when a sweep began is viewed again within `sweep_s` of its start (at
the first update after), and a replica that appears is viewed at once; the pass stays
level-triggered. (It used to view every replica again at one full update every
FULL_READ_S: 294 ms of CPU at 10,000 replicas, over the 200 ms a pass may take; in
shares, the same work is spread over the passes.) A full update views every replica
again.
`observe_all` is the same view of everything without keeping anything (what `weir
status` reads). No I/O here: the caller passes the records, nodes, reports
and verdicts in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace

from weir.controller.nodes import replica_liveness
from weir.controller.observe import ReplicaBook, SessionReport, observe
from weir.controller.reconciler import ReplicaView
from weir.etcd.records import NodeRecord, ReplicaRecord

ReportOf = Callable[[str], SessionReport | None]


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


def clock_bound(view: ReplicaView, report: SessionReport | None) -> bool:
    """Whether time alone may change `view`: a replica not connected (its registration or
    its node's start grace may time out) or stopping before its deadline."""
    return report is None or not report.connected or (view.stopping and not view.stop_overdue)


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
        self._clock_bound: set[str] = set()
        self._nodes: Mapping[str, NodeRecord] = {}
        self._failures: dict[str, str] = {}
        #: The replicas the last update viewed again (or dropped): only their views may
        #: differ from the update's before.
        self.reviewed: set[str] = set()
        #: Those of them the sweep took (`sweep_s`), whatever changed or not.
        self.swept: set[str] = set()
        #: The sweep under way: the replicas recorded when it began, and how far it got.
        self._sweep: list[str] = []
        self._sweep_at = 0
        self._sweep_began = 0.0

    def touch(self, replica_id: str) -> None:
        """The replica's record, report or book changed: view it again at the next update."""
        self._touched.add(replica_id)

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
                self.swept = self._next_share(records, mono_now, sweep_s)
            due = self._touched | self._clock_bound
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
            if record is None:
                self.views.pop(rid, None)
                self.books.pop(rid, None)
                self._clock_bound.discard(rid)
                continue
            report = report_of(rid)
            book = self.books.get(rid, ReplicaBook())
            view, self.books[rid] = view_replica(
                record, report, nodes, book, failures.get(rid, ""), wall_now=wall_now,
                mono_now=mono_now)
            self.views[rid] = view
            if self.books[rid] is not book:
                # A view shows the book as it was (`last_state`): the next one shows this.
                self._touched.add(rid)
            if clock_bound(view, report):
                self._clock_bound.add(rid)
            else:
                self._clock_bound.discard(rid)
        self._nodes, self._failures = nodes, dict(failures)
        return [self.views[rid] for rid in records]

    def _next_share(self, records: Mapping[str, ReplicaRecord], mono_now: float,
                    sweep_s: float) -> set[str]:
        """The sweep's share due by `mono_now` (of those still recorded); once the last
        sweep is through, a new one of every replica recorded now, starting where the last
        one was due to end (or now, if that is more than a sweep ago)."""
        if self._sweep_at >= len(self._sweep):
            start = self._sweep_began + sweep_s if self._sweep else mono_now
            self._sweep, self._sweep_at = list(records), 0
            self._sweep_began = start if 0 <= mono_now - start < sweep_s else mono_now
        due = math.ceil(len(self._sweep) * min(1.0, (mono_now - self._sweep_began) / sweep_s))
        share = self._sweep[self._sweep_at:due]
        self._sweep_at = max(self._sweep_at, due)
        return set(share).intersection(records.keys())
