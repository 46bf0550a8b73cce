"""A simulated fleet for the control-plane scale bench: node agents, replicas and route
subscribers, a thousand or so per process (`bench.sim_worker` runs one `Fleet` in each of
several processes), speaking to a real leader and a real etcd.

What is real and what is not. Each simulated replica holds the real `ReplicaSession` stream
through the replica's own `weir.replica.session.ControllerSession` (registration, reports
at its normal cadence, commands), answers INIT, RECONFIGURE and STOP as a replica does,
and checks its health on a replica's own schedule from INIT (healthy: it runs no user
code); it serves no requests. Each
simulated node registers a lease-bound `NodeRecord` and "starts" the replicas the leader
assigns to it, as `weir.replica.node_agent` does, listing them in its record. Route
subscribers are `weir.dataplane.route_table.RouteTableSubscriber`s, a proxy's own.

Three economies, none on the leader's side of the wire, keep a process able to hold
a thousand or more streams on a shared 2-core machine (docs/scale.md):
- streams share a pool of gRPC channels (HTTP/2 connections) instead of one each;
- the replicas of a process share one `LeaderLocator`, the real one, so one watch of the
  leader key per process where each real replica process holds its own;
- the simulated node agents of a process share one watch of the replica records instead
  of re-reading them every 0.25 s each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import weir.replica.session as session_module
from weir import auth
from weir.config.deployment_options import user_config_json
from weir.dataplane.route_table import LeaderLocator, RouteTable, RouteTableSubscriber
from weir.etcd.keys import NODES_PREFIX, REPLICAS_PREFIX
from weir.etcd.presence import Presence
from weir.etcd.records import NodeRecord, ReplicaRecord
from weir.etcd.store import Store, StoreError
from weir.protos import weir_pb2 as pb
from weir.replica.session import ControllerSession

#: How often a simulated node agent publishes its record when it changed.
NODE_FLUSH_S = 0.25
#: A replica told to stop exits this long after (it drains nothing: it serves nothing).
STOP_DELAY_S = 0.1
Key = tuple[str, str]


class ChannelPool:
    """A few gRPC channels per address, shared round-robin by the simulated replicas."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._channels: dict[str, list[Any]] = {}
        self._next = 0

    @contextlib.asynccontextmanager
    async def channel(self, address: str, **_: Any) -> AsyncIterator[Any]:
        """A shared channel to `address`, left open on exit (`auth.channel`'s shape)."""
        pool = self._channels.setdefault(address, [])
        if len(pool) < self.size:
            pool.append(auth.channel(address))
        self._next += 1
        yield pool[self._next % len(pool)]

    async def close(self) -> None:
        """Close every channel."""
        for pool in self._channels.values():
            for ch in pool:
                await ch.close()
        self._channels.clear()


class SimSession(ControllerSession):
    """The replica's own session, remembering which leader it last registered with."""

    leader = ""

    async def _hold(self, address: str) -> None:
        self.leader = address
        # A fresh event first: `registered` must only say the new leader took it.
        self.registered = asyncio.Event()
        await super()._hold(address)


@dataclass
class SimReplica:
    """One simulated replica: its state as it reports it, and its session."""

    record: ReplicaRecord
    state: int = pb.STARTING
    version: str = ""
    ongoing: int = 0
    user_config: str = ""
    session: SimSession | None = None
    task: asyncio.Task[None] | None = None

    @property
    def key(self) -> Key:
        """Its (app, deployment)."""
        return (self.record.app, self.record.deployment)

    def snapshot(self) -> pb.ReplicaReport:
        """What it reports now."""
        return pb.ReplicaReport(state=self.state, ongoing=self.ongoing, version=self.version,  # type: ignore[arg-type]
                                user_config_json=self.user_config)


async def healthy() -> pb.HealthCheckReply:
    """A simulated replica's health check: it runs no user code, so it is healthy whenever
    its loop gets to answer (a busy loop answering late fails, as a real replica's does)."""
    return pb.HealthCheckReply(healthy=True)


#: The address every simulated replica registers with. Nothing connects to it: health
#: checks' answers go on the replica's session, and the simulated subscribers send no calls.
SIM_REPLICA_ADDRESS = "127.0.0.1:9"


@dataclass
class SimNode:
    """A simulated node agent's record and its presence."""

    record: NodeRecord
    presence: Presence
    dirty: bool = True


@dataclass
class Fleet:
    """Every simulated node, replica and route subscriber of this process."""

    store: Store
    locator: LeaderLocator
    address: str
    nodes: dict[str, SimNode] = field(default_factory=dict)
    replicas: dict[str, SimReplica] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    # ------------------------------------------------------------------ node agents

    def add_nodes(self, indices: Iterable[int], lease_ttl: float) -> None:
        """Register the nodes `sim-node-{i}` for each i of `indices`, each offering plenty
        of CPUs."""
        for i in indices:
            node = NodeRecord(node_id=f"sim-node-{i}", host="127.0.0.1",
                              resources={"CPU": 1e6, "GPU": 0.0}, started_at=time.time(),
                              pid=os.getpid())
            presence = Presence(self.store, NODES_PREFIX + node.node_id, node.to_bytes(),
                                lease_ttl)
            presence.start()
            self.nodes[node.node_id] = SimNode(node, presence)
        loop = asyncio.get_running_loop()
        self.tasks += [loop.create_task(self._watch_assignments()),
                       loop.create_task(self._flush_nodes())]

    async def _watch_assignments(self) -> None:
        items, revision = await self.store.get_prefix(REPLICAS_PREFIX)
        for kv in items:
            self._assigned(ReplicaRecord.from_bytes(kv.value))
        while True:
            with contextlib.suppress(StoreError):
                async for event in self.store.watch_prefix(REPLICAS_PREFIX, revision + 1):
                    revision = max(revision, event.revision)
                    if event.kind == "put":
                        self._assigned(ReplicaRecord.from_bytes(event.value))
                    elif event.kind == "delete":
                        self._unassigned(event.key.removeprefix(REPLICAS_PREFIX))
            await asyncio.sleep(0.2)

    def _assigned(self, record: ReplicaRecord) -> None:
        rid = record.replica_id
        if (record.node_id not in self.nodes or rid in self.replicas or rid in self.ended
                or record.pid):
            return
        replica = SimReplica(record)
        replica.session = SimSession(rid, self.address, self.locator, replica.snapshot,
                                     lambda c, r=replica: self._command(r, c),
                                     check_health=healthy)
        replica.task = asyncio.get_running_loop().create_task(replica.session.run())
        self.replicas[rid] = replica
        self._list(record.node_id, rid, os.getpid())

    def _unassigned(self, replica_id: str) -> None:
        replica = self.replicas.get(replica_id)
        if replica is not None:
            self._exit(replica)
        self.ended.discard(replica_id)

    def _exit(self, replica: SimReplica) -> None:
        if replica.task is not None:
            replica.task.cancel()
        rid = replica.record.replica_id
        self.replicas.pop(rid, None)
        self.ended.add(rid)
        self._list(replica.record.node_id, rid, None)

    def _list(self, node_id: str, replica_id: str, pid: int | None) -> None:
        node = self.nodes[node_id]
        running = dict(node.record.replicas)
        if pid is None:
            running.pop(replica_id, None)
        else:
            running[replica_id] = pid
        node.record = replace(node.record, replicas=running)
        node.dirty = True

    async def _flush_nodes(self) -> None:
        while True:
            for node in self.nodes.values():
                if node.dirty:
                    node.dirty = not await node.presence.update(node.record.to_bytes())
            await asyncio.sleep(NODE_FLUSH_S)

    # ------------------------------------------------------------------ replicas

    async def _command(self, replica: SimReplica, command: pb.ReplicaCommand) -> None:
        if command.kind == pb.INIT:
            spec = json.loads(command.spec_json)
            replica.version = spec["version"]
            replica.user_config = user_config_json(spec["options"].get("user_config"))
            replica.state = pb.RUNNING
            if replica.session is not None:
                replica.session.check_every(float(spec["options"]["health_check_period_s"]),
                                            float(spec["options"]["health_check_timeout_s"]))
        elif command.kind == pb.RECONFIGURE:
            replica.user_config = command.user_config_json
        elif command.kind == pb.STOP:
            replica.state = pb.STOPPING
            asyncio.get_running_loop().call_later(STOP_DELAY_S, self._exit, replica)

    def running(self, key: Key | None = None) -> list[SimReplica]:
        """The RUNNING replicas (of one deployment)."""
        return [r for r in self.replicas.values()
                if r.state == pb.RUNNING and (key is None or r.key == key)]

    def pick(self) -> SimReplica | None:
        """A running replica at random (None if none runs)."""
        running = self.running()
        return random.choice(running) if running else None

    def status(self) -> dict[str, Any]:
        """What the bench's coordinator follows of this fleet, as plain data (see
        `bench.sim_pool.aggregate`): per deployment ("app/deployment") the replicas and the
        running ones by version, and per leader the sessions it has taken."""
        deployments: dict[str, dict[str, Any]] = {}
        adopted: dict[str, int] = {}
        for r in self.replicas.values():
            d = deployments.setdefault("/".join(r.key), {"replicas": 0, "running": {}})
            d["replicas"] += 1
            if r.state == pb.RUNNING:
                d["running"][r.version] = d["running"].get(r.version, 0) + 1
            if r.session is not None and r.session.registered.is_set():
                adopted[r.session.leader] = adopted.get(r.session.leader, 0) + 1
        return {"wall": time.time(), "replicas": len(self.replicas),
                "deployments": deployments, "adopted": adopted}

    def start_churn(self, fraction_per_s: float) -> None:
        """Change the load of `fraction_per_s` of the running replicas each second."""
        self.tasks.append(asyncio.get_running_loop().create_task(self._churn(fraction_per_s)))

    async def _churn(self, fraction_per_s: float, period: float = 0.1) -> None:
        while True:
            await asyncio.sleep(period)
            running = self.running()
            for r in random.sample(running, int(len(running) * fraction_per_s * period)):
                if r.ongoing < 1000:  # a probe's marker stays until the probe is done
                    r.ongoing = random.randint(0, 4)
                    assert r.session is not None
                    r.session.report_soon()

    async def close(self) -> None:
        """Stop every task, session and node."""
        for r in list(self.replicas.values()):
            if r.task is not None:
                r.task.cancel()
        for task in self.tasks:
            task.cancel()
        for node in self.nodes.values():
            await node.presence.withdraw()


@dataclass
class Probe:
    """A change some subscriber must see: `seen(table)` says whether a table shows it."""

    started: float
    seen: Callable[[RouteTable], bool]
    waiting: set[int]
    last: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    #: When it started, by the wall clock (other processes' subscribers time by it too).
    started_wall: float = 0.0
    #: The first table version that showed it (to the last subscriber that saw it here).
    version: int = 0
    #: When the last subscriber here saw it, by the wall clock.
    last_wall: float = 0.0


class Subscribers:
    """`count` route subscribers (a proxy's own), and the probes they are waiting on."""

    def __init__(self, locator: LeaderLocator, count: int) -> None:
        self.count = count
        self.tables: dict[int, RouteTable] = {}
        self.probes: list[Probe] = []
        self._subs = [RouteTableSubscriber(locator, f"proxy:sim-{i}",
                                           lambda t, i=i: self._on_table(i, t))
                      for i in range(count)]

    def start(self) -> None:
        """Subscribe."""
        for sub in self._subs:
            sub.start()

    def _on_table(self, index: int, table: RouteTable) -> None:
        now = time.perf_counter()
        self.tables[index] = table
        for probe in self.probes:
            if index in probe.waiting and probe.seen(table):
                probe.waiting.discard(index)
                probe.last, probe.last_wall = now, time.time()
                probe.version = max(probe.version, table.version)
                if not probe.waiting:
                    probe.done.set()

    def watch(self, seen: Callable[[RouteTable], bool]) -> Probe:
        """Start timing a change now; the probe is done once every subscriber saw it."""
        probe = Probe(time.perf_counter(), seen, set(range(self.count)),
                      started_wall=time.time())
        self.probes.append(probe)
        return probe

    def replicas_seen(self, index: int) -> int:
        """How many replicas subscriber `index` routes to."""
        table = self.tables.get(index)
        return sum(len(d.replicas) for d in table.deployments.values()) if table else 0

    async def close(self) -> None:
        """Unsubscribe."""
        for sub in self._subs:
            await sub.stop()


def target_of(table: RouteTable, key: Key, replica_id: str) -> pb.ReplicaTarget | None:
    """The replica's entry in `table`, or None if it is not routed to."""
    targets = table.deployments.get(key)
    if targets is None:
        return None
    for t in targets.replicas:
        if t.replica_id == replica_id:
            return t
    return None


def pool_replica_channels(size: int) -> ChannelPool:
    """Make the replica sessions of this process share `size` channels per address."""
    pool = ChannelPool(size)
    session_module.auth = pool  # type: ignore[assignment]
    return pool
