"""The route table: which route prefix goes to which app's ingress, and each deployment's
running replicas with their last reported load. Streamed by the leading controller to every
proxy and handle; subscribers keep serving the last table while the controller is away."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import structlog

from weir import auth
from weir.backoff import Backoff
from weir.cancellation import cancel_all, event_within
from weir.dataplane.route_delta import Positions, TableChange, apply_delta, table_change
from weir.etcd.keys import LEADER_KEY
from weir.etcd.store import Store, StoreError, WatchEvent
from weir.leader_redirect import leader_from
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc

log = structlog.get_logger("weir.dataplane.route_table")

#: The pause before following the leader again, doubling while it keeps failing.
FOLLOW_RETRY_FIRST_S = 0.05
FOLLOW_RETRY_MAX_S = 1.0
#: Every replica and proxy loses the leader at the same moment: spread their retries.
FOLLOW_RETRY_JITTER = 0.25


@dataclass(frozen=True)
class RouteEntry:
    """A route prefix and the ingress deployment serving it."""

    route_prefix: str
    app: str
    deployment: str


@dataclass
class RouteTable:
    """Plain-data view of the streamed `weir.RouteTable`."""

    version: int = 0
    routes: list[RouteEntry] = field(default_factory=list)
    deployments: dict[tuple[str, str], pb.DeploymentTargets] = field(default_factory=dict)
    http_options: dict[str, Any] = field(default_factory=dict)
    #: Where each replica sits in its deployment, kept from one delta to the next
    #: (`weir.dataplane.route_delta.apply_delta`).
    _positions: Positions = field(default_factory=dict, repr=False, compare=False)
    #: How this table differs from the one it was made from by a delta (None: a whole
    #: table): which deployments changed only in load, for callers that can update just
    #: those replicas (`weir.dataplane.route_delta.TableChange`).
    change: TableChange | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, msg: pb.RouteTable) -> RouteTable:
        """Build from the wire message."""
        return cls(
            version=msg.version,
            routes=[RouteEntry(r.route_prefix, r.app, r.deployment) for r in msg.routes],
            deployments={(d.app, d.deployment): d for d in msg.deployments},
            http_options=json.loads(msg.http_options_json) if msg.http_options_json else {},
        )

    def with_delta(self, msg: pb.RouteTable) -> RouteTable:
        """This table changed by the delta `msg` (`weir.dataplane.route_delta`): a new
        table, which replaces this one. The deployments whose change is of load alone are
        this table's objects, their counts set in place (`apply_delta`'s
        `loads_in_place`); every other change makes new objects, so a router that took a
        deployment still holds it as it was."""
        # Routes and http_options travel whole in a delta: only the deployments differ.
        positions = dict(self._positions)
        deployments = apply_delta(self.deployments, msg, positions, loads_in_place=True)
        return replace(RouteTable.from_proto(msg), _positions=positions,
                       deployments=deployments,
                       change=table_change(self.deployments, deployments, msg, positions))


def match_route(routes: Sequence[RouteEntry], path: str) -> RouteEntry | None:
    """Longest route prefix that matches `path` on a segment boundary (`/a` matches `/a` and
    `/a/b`, not `/ab`); `/` matches everything."""
    best: RouteEntry | None = None
    for route in routes:
        prefix = route.route_prefix
        if prefix == "/" or path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            if best is None or len(prefix) > len(best.route_prefix):
                best = route
    return best


def parse_leader(value: bytes) -> str:
    """The admin address stored in the leader key."""
    return str(json.loads(value)["address"])


def leader_after(event: WatchEvent) -> str | None:
    """The leader a change of the leader key names: the new value's address, or None once
    the key is gone (a leader stepped down or its lease lapsed: an election is under way)."""
    return parse_leader(event.value) if event.kind == "put" else None


def leader_moved(followed: str, current: str | None) -> bool:
    """Whether a follower of the controller at `followed` must drop it for `current`, the
    leader etcd names now. No leader named (between terms) is no news: the follower keeps
    its stream, and the stream's own end says when that controller is gone."""
    return current is not None and current != followed


class LeaderLocator:
    """Finds the leading controller's admin address: from etcd when endpoints (or a `store`)
    are known, else from a list of controller addresses (any controller tells where the
    leader is).

    With etcd it watches the leader key, one watch for everything the locator serves (a
    replica's session, a proxy's route streams): a follower learns that its leader moved
    when etcd does (`until_moved_from`), and reads the key only to (re)connect. (It used to
    read the key every second for each stream it served: 10,000 reads a second at 10,000
    replicas.) A `store` passed in is the caller's to close."""

    def __init__(self, etcd_endpoints: str = "", controllers: Sequence[str] = (),
                 store: Store | None = None) -> None:
        self.etcd_endpoints = etcd_endpoints
        self.controllers = list(controllers)
        self._store: Store | None = store
        self._owns_store = store is None
        #: The leader the watch last saw (None: no leader key), once `_known`.
        self._leader: str | None = None
        self._known = False
        self._changed = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None

    @property
    def uses_etcd(self) -> bool:
        """Whether the leader is found through etcd (else through `controllers`)."""
        return bool(self.etcd_endpoints) or not self._owns_store

    async def leader_address(self) -> str | None:
        """The leader's address now, or None if it cannot be told: a read of the key (what
        the watch last saw if etcd does not answer). Callers ask only when they (re)connect,
        so this is one read per reconnect, none while a stream holds; and a watch that fell
        silent (it happened at 5,000 replicas with etcd starved of CPU) cannot keep a
        follower on a controller that no longer leads."""
        if not self.uses_etcd:
            return random.choice(self.controllers) if self.controllers else None
        self._start_watch()
        try:
            kv = await (await self._connected()).get(LEADER_KEY)
        except StoreError as exc:
            log.debug("leader lookup failed", error=str(exc))
            return self._leader if self._known else None
        return parse_leader(kv.value) if kv else None

    async def until_moved_from(self, address: str) -> None:
        """Return once etcd names a leader other than `address` (`leader_moved`). A stream
        to a controller that no longer leads may stay open, silent; whoever follows one
        drops it when this returns. Without etcd there is no one to ask, and this never
        returns."""
        if not self.uses_etcd:
            await asyncio.Event().wait()
        self._start_watch()
        while not (self._known and leader_moved(address, self._leader)):
            await self._changed.wait()
        log.info("the leader moved", old=address, new=self._leader)

    async def until_changed(self, timeout: float) -> None:
        """Return when the leader key next changes, or after `timeout` seconds."""
        await event_within(self._changed, timeout)

    def _start_watch(self) -> None:
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._follow_key())

    async def _connected(self) -> Store:
        if self._store is None:
            from weir.etcd.etcd_store import EtcdStore

            store = EtcdStore(self.etcd_endpoints)
            await store.connect()
            self._store = store
        return self._store

    def _saw(self, leader: str | None) -> None:
        self._known = True
        if leader != self._leader:
            self._leader = leader
            self._changed.set()
            self._changed = asyncio.Event()

    async def _follow_key(self) -> None:
        # A read, then a watch from the revision after it; again whenever the watch ends
        # (etcd compacted the history it needed, or the store gave up).
        backoff = Backoff(FOLLOW_RETRY_FIRST_S, FOLLOW_RETRY_MAX_S, jitter=FOLLOW_RETRY_JITTER)
        while True:
            try:
                store = await self._connected()
                items, revision = await store.get_prefix(LEADER_KEY)
                self._saw(next((parse_leader(kv.value) for kv in items
                                if kv.key == LEADER_KEY), None))
                backoff.reset()
                async for event in store.watch_prefix(LEADER_KEY, revision + 1):
                    if event.kind == "reset":
                        break
                    if event.key == LEADER_KEY:
                        self._saw(leader_after(event))
            except StoreError as exc:
                log.debug("leader watch failed", error=str(exc))
                self._known = False  # until the watch is back, ask etcd each time
            await backoff.sleep()

    async def close(self) -> None:
        """Stop watching; release the etcd connection if the locator opened it."""
        if self._watch is not None:
            await cancel_all([self._watch])
            self._watch = None
        self._known = False
        if self._store is not None and self._owns_store:
            await self._store.close()
            self._store = None


async def follow_leader(locator: LeaderLocator, follow: Callable[[str], Awaitable[None]],
                        what: str) -> None:
    """Run `follow(leader_address)` for ever: again after it returns (the stream ended) or
    fails, with a backoff (FOLLOW_RETRY_FIRST_S doubling to FOLLOW_RETRY_MAX_S) while it
    keeps failing, at once when a controller redirects to another (with no etcd to ask).
    Never gives up: a process that stops following the leader (a replica no leader knows
    of, a proxy with a stale table) is worse than one that keeps trying."""
    backoff = Backoff(FOLLOW_RETRY_FIRST_S, FOLLOW_RETRY_MAX_S, jitter=FOLLOW_RETRY_JITTER)
    while True:
        address = await locator.leader_address()
        if address is not None:
            try:
                await follow(address)
                backoff.reset()
            except grpc.aio.AioRpcError as exc:
                target = leader_from(exc)
                if target and target != address and not locator.uses_etcd:
                    # No etcd to ask: the redirect is the news. (With etcd, or a controller
                    # naming itself while between terms, asking again at once would spin.)
                    locator.controllers = [target]
                    continue
                log.info(f"{what} ended", controller=address, code=exc.code().name,
                         details=exc.details() or "", leader=target)
            except Exception:
                log.warning(f"{what} failed", controller=address, exc_info=True)
        # A new leader named meanwhile ends the pause: failover waits on no backoff.
        await locator.until_changed(backoff.next())


#: Something else a caller keeps up with the leader over the route table's channel, until
#: cancelled (the queue reports: `weir.dataplane.queue_report`).
Companion = Callable[[grpc.aio.Channel], Coroutine[Any, Any, None]]


class RouteTableSubscriber:
    """Keeps a live subscription to the leader's route table; `on_table` gets each table.

    Reconnects with backoff, finding the leader anew each time; the last table stays in force
    meanwhile (the data plane never depends on a controller being up). `companions` run on
    the same channel for as long as the table streams from it, so they follow one leader.
    """

    def __init__(self, locator: LeaderLocator, subscriber: str,
                 on_table: Callable[[RouteTable], None],
                 companions: Sequence[Companion] = ()) -> None:
        self.locator = locator
        self.subscriber = subscriber
        self.on_table = on_table
        self.companions = list(companions)
        self.table: RouteTable | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the subscription task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the subscription."""
        if self._task is not None:
            await cancel_all([self._task])
            self._task = None
        await self.locator.close()

    async def _run(self) -> None:
        # Whatever breaks the stream, keep subscribing; the last table stays in force.
        await follow_leader(self.locator, self._follow, "route table stream")

    async def _follow(self, address: str) -> None:
        async with auth.channel(address) as channel:
            stub = pb_grpc.ControllerStub(channel)
            stream = stub.WatchRoutes(pb.WatchRoutesRequest(
                subscriber=self.subscriber, accepts_deltas=True, accepts_compact_load=True))
            loop = asyncio.get_running_loop()
            reader = loop.create_task(self._read(stream))
            moved = loop.create_task(self.locator.until_moved_from(address))
            helpers = [loop.create_task(run(channel)) for run in self.companions]
            try:
                await asyncio.wait({reader, moved}, return_when=asyncio.FIRST_COMPLETED)
                if reader.done():
                    await reader
            finally:
                reader.cancel()
                moved.cancel()
                for helper in helpers:
                    helper.cancel()
                stream.cancel()

    async def _read(self, stream: Any) -> None:
        # Every stream starts with a whole table: a delta only ever follows on one stream.
        async for msg in stream:
            if msg.delta_from:
                if self.table is None or self.table.version != msg.delta_from:
                    log.warning("route delta out of order; subscribing again",
                                have=self.table.version if self.table else None,
                                delta_from=msg.delta_from)
                    return
                table = self.table.with_delta(msg)
            else:
                table = RouteTable.from_proto(msg)
            self.table = table
            self.on_table(table)
