"""Pushing the route table to proxies and handles.

Design. The table is a pure function of the goal and the replicas' reports
(`weir.controller.routing`); this module only moves it. Changes are coalesced: a burst of
reports marks the table dirty once; changes of the replica set go out at once, up to
URGENT_BURST tables in a row, then one per PUBLISH_MIN_INTERVAL_S (`set_change_wait`); a
change of load alone waits for company up to LOAD_PUBLISH_INTERVAL_S. A slow subscriber
never holds up the others: each is only told that a newer version exists, and takes it
when it is ready, skipping the versions in between.

Subscribers that accept deltas (`weir.dataplane.route_delta`) get the whole table once,
then what changed since the version they have: the deltas of the versions they missed,
merged, or the whole table again if those are older than the last DELTA_HISTORY versions.
Each version's delta is computed once, whatever the number of subscribers. Most versions
change only replicas' load: a subscriber that said so (`accepts_compact_load`) gets
those changes as positions and counts (`route_delta.compact_load`, made once per version
when first asked), the others as whole targets.

Between its passes the leader gives only the targets of the replicas that reported
(`TargetChanges`): only those are compared, so a publish costs what changed, not the whole
table (nor the whole deployment: at 1,000 replicas of one deployment that made no
difference); the whole message is made again only when a subscriber needs it (`table`).

Each replica's multiplexed models (`model_ids`, from its session: None for a replica that
does not multiplex) are added to the table here.

A new leader publishes nothing until every recorded replica has re-registered (or a grace
period passed): proxies keep the previous leader's table meanwhile, so no request sees an
empty table during a failover.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from weir.cancellation import event_within
from weir.dataplane.route_delta import (
    IndexedDeployment,
    Key,
    compact_load,
    index_table,
    merge_deltas,
    replica_order,
    table_delta,
    targets_delta,
    whole_table,
)
from weir.protos import weir_pb2 as pb

PUBLISH_MIN_INTERVAL_S = 0.05
#: How many changes of the replica set go out back to back before PUBLISH_MIN_INTERVAL_S
#: spaces them (a credit refilled at one per interval): a replica leaving and coming back
#: within 50 ms is two tables at once, a rolling update's hundreds are spaced.
URGENT_BURST = 4.0
#: A change of load alone (a replica's ongoing count) waits up to this long for company:
#: at thousands of replicas reports arrive every millisecond, and rebuilding the table for
#: each would keep the leader busy; a change of the replica set goes out at once.
LOAD_PUBLISH_INTERVAL_S = 0.25
#: How many versions' deltas are kept for subscribers that fell behind.
DELTA_HISTORY = 64


@dataclass(frozen=True)
class TargetChanges:
    """The next table as changes to the current one: `shell`'s routes and http options
    (whole; its deployments are ignored), and the new target of each replica given, by
    deployment (None: it leaves the routes). Every deployment given must be in the current
    table (`RoutePublisher.has`); everything not given is as it was."""

    shell: pb.RouteTable
    targets: Mapping[Key, Mapping[str, pb.ReplicaTarget | None]]


def set_change_wait(credit: float, since_last_s: float) -> tuple[float, float]:
    """How long a table with a change of the replica set waits before it goes out, and the
    credit left after it: `credit` (at most URGENT_BURST) was left when the last such table
    went out, `since_last_s` ago, and grows by one per PUBLISH_MIN_INTERVAL_S since; one
    table spends one. Pure."""
    credit = min(URGENT_BURST, credit + since_last_s / PUBLISH_MIN_INTERVAL_S)
    if credit >= 1.0:
        return 0.0, credit - 1.0
    return (1.0 - credit) * PUBLISH_MIN_INTERVAL_S, 0.0


class RoutePublisher:
    """Holds the current table and its subscribers for one term of leadership."""

    def __init__(self, current_table: Callable[[], pb.RouteTable | TargetChanges],
                 adopted: Callable[[], bool], ended: asyncio.Event,
                 model_ids: Callable[[str], Sequence[str] | None] | None = None) -> None:
        self._current_table = current_table
        #: The multiplexed models a replica holds, by replica id (`ReplicaSessions.model_ids`).
        self.model_ids = model_ids
        self._adopted = adopted
        self._ended = ended
        self._dirty = asyncio.Event()
        #: Something besides load changed: publish without waiting for LOAD_PUBLISH_INTERVAL_S.
        self._urgent = asyncio.Event()
        self._last_publish = 0.0
        #: When the last table with a change besides load went out, and the credit of
        #: such tables left then (`set_change_wait`).
        self._last_urgent = 0.0
        self._credit = URGENT_BURST
        #: One event per subscriber, set when a newer version is out.
        self._subscribers: set[asyncio.Event] = set()
        #: The current version: its routes and http options (`_shell`), its deployments
        #: (`_index`), and the whole message once a subscriber needed it (`_whole`).
        self.version = 0
        self._shell = pb.RouteTable()
        self._index: dict[Key, IndexedDeployment] = {}
        self._whole: pb.RouteTable | None = pb.RouteTable()
        #: Version -> the delta from the version before it.
        self._deltas: dict[int, pb.RouteTable] = {}
        #: The current version's delta with its loads compact (once asked), the index of
        #: the version before it (what tells a change of load alone), and each
        #: deployment's replica positions (kept until its replicas change).
        self._compact: pb.RouteTable | None = None
        self._previous_index: dict[Key, IndexedDeployment] = {}
        self._orders: dict[Key, dict[str, int]] = {}
        self.ready = False

    def mark_dirty(self, load_only: bool = False) -> None:
        """Something the table depends on changed; `load_only`: only replicas' load, which
        may wait a little (LOAD_PUBLISH_INTERVAL_S) to go out with other changes."""
        if not load_only:
            self._urgent.set()
        self._dirty.set()

    async def run(self) -> None:
        """Publish on every change until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await self._dirty.wait()
            wait = self._last_publish + LOAD_PUBLISH_INTERVAL_S - loop.time()
            if not self._urgent.is_set() and wait > 0:
                await event_within(self._urgent, wait)
            urgent = self._urgent.is_set()
            # A change of the replica set goes out at once unless a burst of them just
            # did (a rolling update makes hundreds); one right after a load-only table
            # does not wait either.
            if urgent:
                gap, self._credit = set_change_wait(self._credit,
                                                    loop.time() - self._last_urgent)
                if gap > 0:
                    await asyncio.sleep(gap)
            self._dirty.clear()
            self._urgent.clear()
            self._last_publish = loop.time()
            if urgent:
                self._last_urgent = self._last_publish
            if self.ready or self._adopted():
                self.ready = True
                self.publish_now()
            else:
                self._dirty.set()
                await asyncio.sleep(PUBLISH_MIN_INTERVAL_S)

    def publish_now(self) -> None:
        """Publish the table as it is now (whole, or only what changed)."""
        change = self._current_table()
        if isinstance(change, TargetChanges):
            for targets in change.targets.values():
                mark_models((t for t in targets.values() if t is not None), self.model_ids)
            self._publish_targets(change)
        else:
            self._publish(with_model_ids(change, self.model_ids))

    @property
    def table(self) -> pb.RouteTable:
        """The whole current table (made from the index when first asked, per version)."""
        if self._whole is None:
            self._whole = whole_table(self._shell, self._index)
        return self._whole

    def has(self, key: Key) -> bool:
        """Whether the current table has the deployment `key`."""
        return key in self._index

    def target(self, key: Key, replica_id: str) -> pb.ReplicaTarget | None:
        """A replica's target in the current table (None: it has none)."""
        entry = self._index.get(key)
        return entry.targets.get(replica_id) if entry is not None else None

    def _publish(self, table: pb.RouteTable) -> None:
        """Publish the whole `table` as the next version, if it changes anything."""
        index = index_table(table)
        table.version = self.version + 1
        self._advance(table_delta(self.version, self._index, table, index), index, table)

    def _publish_targets(self, change: TargetChanges) -> None:
        """Publish the current table changed by `change` as the next version, if that
        changes anything; costs what `change` gives, not the whole table."""
        delta, index = targets_delta(self.version, self._index, change.shell, change.targets)
        self._advance(delta, index, None)

    def _advance(self, delta: pb.RouteTable, index: dict[Key, IndexedDeployment],
                 whole: pb.RouteTable | None) -> None:
        """Make `delta` (to `index`; `whole`: the whole message, if at hand) the next
        version, unless it changes nothing."""
        if (not delta.deployments and not delta.removed_deployments
                and list(delta.routes) == list(self._shell.routes)
                and delta.http_options_json == self._shell.http_options_json
                and self.version > 0):
            return
        self._forget_orders(delta, whole is not None)
        self.version = delta.version
        self._deltas[self.version] = delta
        self._compact = None
        self._previous_index = self._index
        self._deltas.pop(self.version - DELTA_HISTORY, None)
        self._shell = pb.RouteTable(version=self.version,
                                    http_options_json=delta.http_options_json)
        self._shell.routes.extend(delta.routes)
        self._index = index
        # The whole message only when a subscriber asks (most take deltas).
        self._whole = whole
        for event in self._subscribers:
            event.set()

    def _forget_orders(self, delta: pb.RouteTable, whole: bool) -> None:
        """Drop the replica positions `delta` changes (all of them for a whole table)."""
        if whole:
            self._orders.clear()
            return
        for gone in delta.removed_deployments:
            self._orders.pop((gone.app, gone.deployment), None)
        for d in delta.deployments:
            key = (d.app, d.deployment)
            entry = self._index.get(key)
            if (entry is None or d.removed_replica_ids
                    or any(t.replica_id not in entry.targets for t in d.replicas)):
                self._orders.pop(key, None)

    def _order(self, key: Key) -> dict[str, int]:
        order = self._orders.get(key)
        if order is None:
            order = self._orders[key] = replica_order(self._index[key].targets)
        return order

    def update_for(self, version: int, accepts_deltas: bool,
                   compact: bool = False) -> pb.RouteTable:
        """What a subscriber holding `version` (0: none) is sent to be current; `compact`:
        it takes changes of load alone as positions and counts."""
        current = self.version
        if not accepts_deltas or version == 0 or version + 1 not in self._deltas:
            return self.table
        if version + 1 == current:
            # The usual case: one version behind gets the version's own delta, the same
            # message for every subscriber (a delta is never changed once published).
            if not compact:
                return self._deltas[current]
            if self._compact is None:
                self._compact = compact_load(self._deltas[current], self._previous_index,
                                             self._order)
            return self._compact
        # Rare (a subscriber fell behind): the whole targets, merged.
        return merge_deltas([self._deltas[v] for v in range(version + 1, current + 1)])

    async def watch(self, accepts_deltas: bool = False,
                    compact: bool = False) -> AsyncIterator[pb.RouteTable]:
        """The table now (once ready) and on every change, until this term ends; with
        `accepts_deltas`, the whole table first and deltas after (`compact`: with changes
        of load alone as positions and counts)."""
        newer = asyncio.Event()
        self._subscribers.add(newer)
        if self.ready:
            newer.set()
        sent = 0
        # The term's end wakes this subscriber as a new version does: one wait per
        # version, where a task per version and subscriber (waiting on either) cost the
        # leader some 5 % of a core at 100 subscribers.
        ended = asyncio.get_running_loop().create_task(self._ended.wait())
        ended.add_done_callback(lambda _: newer.set())
        try:
            while True:
                await newer.wait()
                if ended.done():
                    break
                newer.clear()
                if self.ready and self.version != sent:
                    update = self.update_for(sent, accepts_deltas, compact)
                    sent = self.version
                    yield update
        finally:
            ended.cancel()
            self._subscribers.discard(newer)


def with_model_ids(table: pb.RouteTable,
                   model_ids: Callable[[str], Sequence[str] | None] | None) -> pb.RouteTable:
    """The table with each multiplexing replica marked so, and its models filled in (set,
    not added to: parts of an earlier table may be reused)."""
    for targets in table.deployments:
        mark_models(targets.replicas, model_ids)
    return table


def mark_models(targets: Iterable[pb.ReplicaTarget],
                model_ids: Callable[[str], Sequence[str] | None] | None) -> None:
    """Mark each multiplexing replica of `targets` so, with its models (set, not added to)."""
    if model_ids is None:
        return
    for replica in targets:
        held = model_ids(replica.replica_id)
        if held is not None:
            replica.multiplexed = True
            del replica.multiplexed_model_ids[:]
            replica.multiplexed_model_ids.extend(held)
