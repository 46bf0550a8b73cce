"""The leader's own work at N replicas, timed in-process (no etcd, no replicas, no network).

A real `Leader` over a `MemoryStore` (`IndexedStore`: its prefix reads cost what they
return, as etcd's do): one app with deployments of `--deployment-size` replicas (N in all;
by default one deployment of N) on one node that lists them all, every replica RUNNING on
a session of its own (fake sessions, filled in by hand), the leader's loops not running
(each step is called and timed here). Printed per N, medians in ms:

- pass: a reconcile pass between full reads with nothing new; each pass comes TICK_S
  after the last on the leader's clock (a `ManualClock`), so that it takes the share of
  the sweep (`SWEEP_S`) a pass takes at that cadence;
- checks: the mean CPU of those passes' health-check step (`HealthProber.follow`:
  `CheckTargets.update` and `HealthProber.update`), which is not the pass's decisions (ms);
- pass 1 new: a pass after one replica reported something new (a message), so that its
  deployment is judged, rolled up and planned again;
- pass 5% / pass 5% same: a pass after 5 % of the replicas reported a new load / the same
  report again (the idle heartbeat), as their sessions take reports;
- full: a pass that reads every record (every FULL_READ_S);
- pub 5% new / pub 5% same: a publish after 5 % of the replicas reported a new load / the
  same report again (the idle heartbeat);
- pub whole: a publish of the whole table, built and compared with the published one (at
  every full read until round 4, every WHOLE_TABLE_S since);
- gc2 n / gc2 max ms: how many full collections Python's cyclic garbage collector made
  during those passes and publishes, and the longest (each pass's and publish's own time
  includes the pauses within it);
- admit: a new leader (a failover) admitting all N replicas at once, each with a new pid,
  over a store that charges ETCD_REQUEST_S of serialised work per request (etcd's cost per
  request on a busy machine); and how many etcd write requests that took;
- start ms / register ms: a failover's work in the new leader (`failover`): its start,
  and all N replicas registering at once through its sessions with the pids recorded.

The passes and publishes are timed in CPU time (`time.process_time`: this process's, so
the wait for a core on a shared machine is left out); the admission in wall time, as it
waits on the store. Both still move with the machine's load (caches, frequency): compare
figures of one run.

    python -m bench.leader_pass --replicas 1000 2000 5000 10000
    python -m bench.leader_pass --replicas 1000 10000 --deployment-size 1000
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import itertools
import logging
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import structlog

from weir.build import BuiltApp, DeploymentSpec
from weir.controller.cluster_goal import read_goal, read_records
from weir.controller.goal import AppGoal
from weir.controller.leader import TICK_S, Leader
from weir.controller.replica_sessions import Session

try:
    from weir.controller.replica_sessions import says_nothing_new
except ImportError:  # a tree before it (to time against)
    says_nothing_new = None  # type: ignore[assignment]
from weir.etcd.keys import APPS_PREFIX, NODES_PREFIX, REPLICAS_PREFIX
from weir.etcd.memory_store import ManualClock, MemoryStore
from weir.etcd.records import NodeRecord, ReplicaRecord
from weir.etcd.store import KeyValue
from weir.protos import weir_pb2 as pb

#: What one etcd request costs etcd in the admission timing (serialised: one at a time).
ETCD_REQUEST_S = 0.001


class CostlyStore:
    """A `MemoryStore` whose reads and writes each take ETCD_REQUEST_S, one at a time."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._lock = asyncio.Lock()
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def _cost(self) -> None:
        async with self._lock:
            await asyncio.sleep(ETCD_REQUEST_S)

    async def get(self, key: str) -> Any:
        await self._cost()
        return await self._store.get(key)

    async def put(self, key: str, value: bytes, **kw: Any) -> int:
        self.writes += 1
        await self._cost()
        return await self._store.put(key, value, **kw)

    async def commit(self, **kw: Any) -> int | None:
        self.writes += 1
        await self._cost()
        return await self._store.commit(**kw)


class IndexedStore(MemoryStore):
    """A `MemoryStore` whose prefix reads look at the keys under the prefix alone, as an
    etcd range does: `MemoryStore` sorts every key on each, which at 10,000 records was
    more of a pass than the pass's own work (the goal and the nodes are read every pass).
    The keys are sorted again only after a write."""

    _sorted: tuple[int, list[str]] = (-1, [])

    async def get_prefix(self, prefix: str, *, keys_only: bool = False
                         ) -> tuple[list[KeyValue], int]:
        if keys_only:
            return await super().get_prefix(prefix, keys_only=True)
        etcd = await self._call(f"get prefix {prefix}")
        if self._sorted[0] != etcd.revision:
            self._sorted = (etcd.revision, sorted(etcd.keys))
        keys = self._sorted[1]
        first = bisect.bisect_left(keys, prefix)
        found = itertools.takewhile(lambda key: key.startswith(prefix), keys[first:])
        return [etcd.keys[key] for key in found], etcd.revision


class CpuOf:
    """The CPU time spent in some of an object's methods while it listens (ms)."""

    def __init__(self, *methods: tuple[Any, str]) -> None:
        self.ms = 0.0
        for owner, name in methods:
            setattr(owner, name, self._timed(getattr(owner, name)))

    def _timed(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kw: Any) -> Any:
            began = time.process_time()
            try:
                return method(*args, **kw)
            finally:
                self.ms += (time.process_time() - began) * 1000
        return timed


class GcPauses:
    """The pauses of the cyclic garbage collector's full collections while it listens, in
    CPU time (a collection does no I/O: its wall time on a shared machine is mostly the
    wait for a core)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._began = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.process_time()
        elif info["generation"] == 2:
            self.pauses.append((time.process_time() - self._began) * 1000)

    def stop(self) -> tuple[float, float]:
        """How many full collections, and the longest one (ms)."""
        gc.callbacks.remove(self._note)
        return len(self.pauses), max(self.pauses, default=0.0)


def full_read_due(leader: Leader) -> None:
    """Make the leader's next pass read every record."""
    if hasattr(leader, "keeper"):
        leader.keeper.last_full_read = None
    else:  # a tree before round 4
        leader._last_full_read = None  # type: ignore[attr-defined]


def report(rid: str, pid: int, version: str, ongoing: int = 0) -> pb.ReplicaReport:
    return pb.ReplicaReport(replica_id=rid, pid=pid, state=pb.RUNNING, version=version,
                            address=f"10.0.{pid // 250}.{pid % 250}:9000", ongoing=ongoing,
                            user_config_json="null")


def publish(leader: Leader) -> None:
    """What the route publisher does when woken."""
    leader.routes.publish_now()


async def median_ms(step: Callable[[], Awaitable[None]], times: int,
                    before: Callable[[], None] = lambda: None) -> float:
    took = []
    for _ in range(times):
        before()
        # CPU time, not wall time: on a shared machine the wait for a core is most of the
        # wall time, and the pass does no I/O here.
        began = time.process_time()
        await step()
        took.append((time.process_time() - began) * 1000)
    return statistics.median(took)


async def measure(n: int, passes: int, deployment_size: int | None = None) -> dict[str, float]:
    store = IndexedStore()
    node = NodeRecord("n1", "127.0.0.1", {"CPU": float(n + 10), "GPU": 0.0})
    await store.put(NODES_PREFIX + "n1", node.to_bytes())
    size = min(n, deployment_size or n)
    specs = [DeploymentSpec("app", f"D{i}" if size < n else "D",
                            {"num_replicas": min(size, n - first),
                             "health_check_period_s": 3600}, b"v1", ingress=first == 0)
             for i, first in enumerate(range(0, n, size))]
    goal = AppGoal(name="app", config={"name": "app"}, deployment_timestamp=1.0,
                   build_key="k", built_json=BuiltApp("app", specs).to_json())
    await store.put(APPS_PREFIX + "app", goal.to_bytes())
    clock = ManualClock(1000.0)
    leader = Leader(store, python_executable=sys.executable, clock=clock)
    await leader.reconcile_once()  # places and records the N replicas
    records = dict(leader.records)
    assert len(records) == n, f"placed {len(records)} of {n}"
    node = replace(node, replicas={rid: 1000 + i for i, rid in enumerate(records)})
    await store.put(NODES_PREFIX + "n1", node.to_bytes())
    for i, (rid, record) in enumerate(records.items()):
        first = report(rid, 1000 + i, record.version)
        sess = Session(rid, report=first)
        sess.take(first)
        leader.sessions.sessions[rid] = sess
    # Passes between full reads, as with the watch.
    if hasattr(leader, "keeper"):
        leader.keeper.watching = True
    else:  # a tree before round 4
        leader._watching_records = True  # type: ignore[attr-defined]
    await leader.reconcile_once()
    full_read_due(leader)  # a full read, as the leader makes every FULL_READ_S
    await leader.reconcile_once()
    leader.routes.ready = True
    publish(leader)
    ids = list(records)
    tick = [0]
    pauses = GcPauses()

    def reports(same: bool) -> None:
        """5 % of the replicas report: a new load, or what they said last."""
        tick[0] += 1
        for i in range(0, n, 20):
            rid = ids[(i + tick[0]) % n]
            sess = leader.sessions.sessions[rid]
            old = sess.report
            new = report(rid, old.pid, old.version,
                         old.ongoing if same else (old.ongoing + 1) % 7)
            # Only the load: what `one_new` changed stays as it was.
            new.message = old.message
            # What the session does with a report (`ReplicaSessions.hold`).
            if says_nothing_new is not None and says_nothing_new(old, new):
                continue
            sess.take(new)
            leader._on_report(rid, False)

    def one_new() -> None:
        """One replica reports something new (its message): its deployment changed."""
        tick[0] += 1
        rid = ids[tick[0] % n]
        sess = leader.sessions.sessions[rid]
        new = pb.ReplicaReport()
        new.CopyFrom(sess.report)
        new.message = f"report {tick[0]}"
        sess.take(new)
        leader._on_report(rid, False)

    async def one_pass() -> None:
        clock.advance(TICK_S)
        await leader.reconcile_once()

    # `follow` takes the pass's views and updates the checks (round 6); before, the
    # leader called `CheckTargets.update` and `HealthProber.update` itself.
    checks = CpuOf(*[(leader.prober, "follow")] if hasattr(leader.prober, "follow") else [
        (owner, name) for owner, name in
        ((leader.prober, "update"), (getattr(leader, "checks", None), "update"))
        if owner is not None])

    async def full_pass() -> None:
        clock.advance(TICK_S)
        full_read_due(leader)
        await leader.reconcile_once()

    async def publish_step() -> None:
        publish(leader)

    def whole_table_due() -> None:
        if hasattr(leader, "route_changes"):
            leader.route_changes.everything()
        else:  # a tree before round 4 (to time against)
            leader._routes_changed = None  # type: ignore[attr-defined]

    out = {"pass": await median_ms(one_pass, passes)}
    out["checks"] = checks.ms / passes
    out |= {
        "pass 1 new": await median_ms(one_pass, passes, one_new),
        "pass 5%": await median_ms(one_pass, passes, lambda: reports(False)),
        "pass 5% same": await median_ms(one_pass, passes, lambda: reports(True)),
        "full": await median_ms(full_pass, max(3, passes // 4)),
        "pub 5% new": await median_ms(publish_step, passes * 2, lambda: reports(False)),
        "pub 5% same": await median_ms(publish_step, passes * 2, lambda: reports(True)),
        "pub whole": await median_ms(publish_step, max(3, passes // 4), whole_table_due),
    }
    out["gc2 n"], out["gc2 max ms"] = pauses.stop()
    # A failover: a new leader reads the records, and every replica registers at once with
    # a new pid (a restarted fleet) or the first time since its launch.
    costly = CostlyStore(store)
    successor = Leader(costly, python_executable=sys.executable)  # type: ignore[arg-type]
    await read_records(store, successor.replica_records)
    successor.goal = await read_goal(store, successor.replica_records)
    admit = (successor.registration.admit if hasattr(successor, "registration")
             else successor._admit)  # type: ignore[attr-defined]  # before round 4
    began = time.perf_counter()
    admitted = await asyncio.gather(*(
        admit(report(rid, 50_000 + i, "")) for i, rid in enumerate(ids)))
    out["admit s"] = time.perf_counter() - began
    out["admit writes"] = costly.writes
    assert all(a is not None for a in admitted)
    await successor.stop()
    await leader.stop()
    out["start ms"], out["register ms"] = await failover(store, ids)
    return out


async def failover(store: MemoryStore, ids: list[str]) -> tuple[float, float]:
    """A failover's work in the new leader, in CPU ms: its start (the records and the goal
    read) and every replica registering at once through its session, as
    after a failover (the same pids as recorded: no write). No gRPC: its own cost per
    stream is not the leader's code."""
    records = {kv.key.rpartition("/")[2]: ReplicaRecord.from_bytes(kv.value)
               for kv in (await store.get_prefix(REPLICAS_PREFIX))[0]}
    leader = Leader(store, python_executable=sys.executable)
    began = time.process_time()
    # What `Leader.start` does before its loops run (they are not run here).
    await leader.keeper.load()
    leader.goal = await read_goal(store, leader.replica_records)
    start_ms = (time.process_time() - began) * 1000

    async def reports(rid: str) -> AsyncIterator[pb.ReplicaReport]:
        record = records[rid]
        yield report(rid, record.pid, record.version)
        await leader.ended.wait()

    sessions = [leader.session(reports(rid)) for rid in ids]
    began = time.process_time()
    firsts = await asyncio.gather(*(anext(s) for s in sessions))
    register_ms = (time.process_time() - began) * 1000
    assert all(c.kind == pb.REGISTERED for c in firsts)
    await leader.stop()
    for s in sessions:
        await s.aclose()  # type: ignore[attr-defined]
    return start_ms, register_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    parser.add_argument("--passes", type=int, default=10, help="timed passes per figure")
    parser.add_argument("--deployment-size", type=int, default=None,
                        help="replicas per deployment (default: one deployment of N)")
    args = parser.parse_args()
    # One log line per replica assigned and per registration would be most of the time.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    columns = ["pass", "checks", "pass 1 new", "pass 5%", "pass 5% same", "full",
               "pub 5% new", "pub 5% same", "pub whole",
               "gc2 n", "gc2 max ms", "admit s", "admit writes", "start ms", "register ms"]
    print(f"load average {os.getloadavg()[0]:.1f}; ms unless said; replicas per deployment: "
          f"{args.deployment_size or 'all'}")
    print("| N | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for n in args.replicas:
        row = asyncio.run(measure(n, args.passes, args.deployment_size))
        cells = [f"{row[c]:.0f}" if c in ("gc2 n", "admit writes") else f"{row[c]:.2f}"
                 for c in columns]
        print(f"| {n:,} | " + " | ".join(cells) + " |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
