"""The control plane at scale: a real etcd and two real controllers, thousands of simulated
replicas and route subscribers (`bench.sim_fleet`), and what the leader does with them.

    python -m bench.control_plane_scale --replicas 2000 --proxies 100 --nodes 10 \\
        --duration 30 --json out.json

Phases: deploy N replicas (apps of at most 1,000 replicas each) and wait until every one
runs and every subscriber routes to it; a steady state of `--duration` seconds (reports at
the replicas' normal cadence, load churn, probes timing route pushes); a rolling update of
one deployment; SIGKILL of the leader until the standby has adopted every replica. It
prints a table and writes the figures as JSON (`FIGURES` names the keys).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from bench.processes import REPO_ROOT
from bench.sim_fleet import Probe, Subscribers, target_of
from bench.sim_pool import SimPool
from weir import auth
from weir.cli.admin_client import AdminClient
from weir.controller.pass_stats import PASS_STATS_S
from weir.dataplane.route_table import LeaderLocator, RouteTable, parse_leader
from weir.etcd.etcd_store import EtcdStore
from weir.etcd.keys import LEADER_KEY
from weir.etcd.server import EtcdServer
from weir.etcd.store import StoreError
from weir.processes import free_port, kill, spawn, terminate
from weir.protos import weir_pb2 as pb
from weir.runtime import configure_logging

#: The JSON's figures, in the table's order.
FIGURES = ("replicas", "proxies", "ramp_s", "route_push_p99_ms", "report_to_route_p99_ms",
           "leader_cpu_pct", "leader_rss_mb", "etcd_writes_per_s", "max_pass_ms",
           "deploy_s", "failover_s", "sim_cpu_pct")
APP_SIZE = 1000
PROBE_TIMEOUT_S = 10.0
#: A probe round (two changes of the set and a report) begins this often, whatever its
#: probes took: the leader's CPU in the steady state includes what the probes cost, so
#: their rate must not depend on how fast they are seen (runs before this paced the
#: rounds by a 0.2 s pause after each, about one every 0.55 s at 1,000).
PROBE_ROUND_S = 0.55
#: The controllers' lease TTL by default: the real one.
LEASE_TTL_S = 3.0
#: Simulated replica streams per simulation process, at most (the default `--sim-procs`).
STREAMS_PER_PROC = 1250


def sim_procs(replicas: int) -> int:
    """How many simulation processes hold `replicas` (each at most STREAMS_PER_PROC)."""
    return max(1, -(-replicas // STREAMS_PER_PROC))


def node_count(nodes: int | None, procs: int) -> int:
    """`--nodes`, or by default at least 10 and a multiple of `procs` (each simulation
    process then holds the same number of nodes, and so about as many replicas)."""
    if nodes is not None:
        return nodes
    return -(-max(10, procs) // procs) * procs


T = TypeVar("T")


async def patiently(read: Callable[[], Awaitable[T]], patience_s: float = 30.0) -> T:
    """`read()`, asked again for up to `patience_s` while etcd fails to answer (a loaded
    machine at 10,000 replicas): the bench measures the system rather than stop at its
    first slow read."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return await read()
        except StoreError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def leader_now(store: EtcdStore) -> tuple[str | None, int]:
    """The leader's address and PID as etcd names them now (None, 0: no leader), read
    `patiently`."""
    kv = await patiently(lambda: store.get(LEADER_KEY))
    if kv is None:
        return None, 0
    return parse_leader(kv.value), int(json.loads(kv.value).get("pid", 0))


async def etcd_revision(store: EtcdStore) -> int:
    """etcd's revision now (what counts its writes), read `patiently` (a 10,000 run once
    stopped at this read, after its steady state)."""
    _, revision = await patiently(lambda: store.get_prefix("/weir/nothing/"))
    return revision


async def leader_elected(store: EtcdStore, timeout_s: float) -> tuple[str, int]:
    """The leader's address and PID once there is one (its PID never 0: `os.kill(0, ...)`
    signals the bench's own process group, which a failover phase begun between two terms
    once did, killing the bench and leaving its controllers behind)."""
    deadline = time.monotonic() + timeout_s
    while True:
        address, pid = await leader_now(store)
        if address is not None and pid > 0:
            return address, pid
        if time.monotonic() > deadline:
            raise TimeoutError(f"no leader within {timeout_s:.0f} s")
        await asyncio.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of `pid`, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


#: One subscriber's table versions as they arrived, and when (wall clock).
Arrivals = tuple[list[int], list[float]]


def arrival_wall(probe: Probe, versions: list[int], walls: list[float]) -> float | None:
    """When one subscriber first had a version showing `probe`'s change: its first arrival
    since the change began at or past the witness's version (None: none yet). Looked for
    among the arrivals since the change only: a leader's table versions start again with
    its term, so over a run with two terms the versions are not in order (a 10,000 run
    whose leader lost its term in the ramp found "sightings" from the first term, 75 s
    before the change)."""
    start = bisect.bisect_left(walls, probe.started_wall)
    for i in range(start, len(versions)):
        if versions[i] >= probe.version:
            return walls[i]
    return None


def latency_ms(probe: Probe, arrivals: list[Arrivals]) -> float:
    """From the change until the last subscriber had a version showing it: the witness's
    own sighting, and each other subscriber's first version at or past the witness's. A
    change some subscriber never got counts as PROBE_TIMEOUT_S."""
    if not probe.done.is_set():
        return PROBE_TIMEOUT_S * 1000
    last = probe.last_wall
    for versions, walls in arrivals:
        wall = arrival_wall(probe, versions, walls)
        if wall is None:
            return PROBE_TIMEOUT_S * 1000
        last = max(last, wall)
    return 1000 * (last - probe.started_wall)


def first_arrival_ms(probe: Probe, arrivals: list[Arrivals]) -> float | None:
    """From the change until the first subscriber had a version showing it (the leader's
    part of the push: the report's way in, the publish, one send); None if the change
    never showed. `latency_ms` less this is the fan-out to every subscriber."""
    if not probe.done.is_set():
        return None
    first = probe.last_wall
    for versions, walls in arrivals:
        wall = arrival_wall(probe, versions, walls)
        if wall is not None:
            first = min(first, wall)
    return 1000 * (first - probe.started_wall)


def pass_times(events: list[dict[str, Any]], began: float, ended: float
               ) -> tuple[float | None, int]:
    """The slowest reconcile pass the controller's log `events` show within [`began`,
    `ended`] (wall clock), and how many passes were slow (over SLOW_PASS_S, each logged
    on its own). A periodic stats line counts only if the PASS_STATS_S it covers lies
    within: one that covers the ramp or the rolling update says nothing of the steady
    state. None: no pass logged."""
    slowest, slow = None, 0
    for event in events:
        kind = event.get("event")
        if kind not in ("reconcile passes", "slow reconcile pass"):
            continue
        at = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
        if kind == "slow reconcile pass" and began <= at <= ended:
            slow += 1
            slowest = max(slowest or 0.0, float(event["ms"]))
        elif kind == "reconcile passes" and began <= at - PASS_STATS_S and at <= ended:
            slowest = max(slowest or 0.0, float(event["max_ms"]))
    return slowest, slow


def p99(values: list[float]) -> float:
    """The 99th percentile (the largest value under 100 samples)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def app_config(replicas: int, num_cpus: float = 1.0,
               health_check_period_s: float | None = None) -> list[dict[str, Any]]:
    """Apps of at most APP_SIZE replicas each, `replicas` in all (checked every
    `health_check_period_s`: None keeps the default)."""
    apps, left, i = [], replicas, 0
    while left > 0:
        n = min(APP_SIZE, left)
        deployment: dict[str, Any] = {"name": "Noop", "num_replicas": n,
                                      "ray_actor_options": {"num_cpus": num_cpus}}
        if health_check_period_s is not None:
            deployment["health_check_period_s"] = health_check_period_s
        apps.append({"name": f"sim{i}", "import_path": "bench.noop_app:app",
                     "route_prefix": f"/sim{i}", "deployments": [deployment]})
        left, i = left - n, i + 1
    return apps


async def wait_until_async(check: Callable[[], Awaitable[Any]], timeout: float, what: str,
                           period: float = 0.1) -> float:
    """Poll `await check()` until true; the seconds it took. Raises TimeoutError naming
    `what` (a check that raises StoreError counts as false)."""
    began = time.perf_counter()
    while True:
        with contextlib.suppress(StoreError):
            if await check():
                return time.perf_counter() - began
        if time.perf_counter() - began > timeout:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        await asyncio.sleep(period)


async def wait_until(check: Any, timeout: float, what: str, period: float = 0.1) -> float:
    """Poll `check()` until true; the seconds it took. Raises TimeoutError naming `what`."""
    began = time.perf_counter()
    while not check():
        if time.perf_counter() - began > timeout:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        await asyncio.sleep(period)
    return time.perf_counter() - began


class Bench:
    """One run: the processes, the fleet, and the figures."""

    def __init__(self, opts: argparse.Namespace, workdir: Path) -> None:
        self.opts = opts
        self.workdir = workdir
        self.controllers: list[Any] = []
        self.log_offsets: dict[int, int] = {}
        self.subscriber_procs: list[tuple[Any, Path]] = []
        self.pool = SimPool(workdir)
        self.figures: dict[str, Any] = {"replicas": opts.replicas, "proxies": opts.proxies,
                                        "nodes": opts.nodes,
                                        "leader_lease_ttl": opts.leader_lease_ttl,
                                        "sim_nice": opts.sim_nice,
                                        "etcd_nice": opts.etcd_nice}
        self.etcd = EtcdServer(workdir / "etcd", extra_args=(
            ["--unsafe-no-fsync"] if opts.etcd_no_fsync else []))

    def start_controller(self, index: int) -> str:
        """Start a controller process (pinned to `--leader-cpu` if given); its address."""
        port = free_port()
        cmd = [sys.executable, "-m", "weir.controller", "--etcd", self.etcd.endpoint,
               "--port", str(port), "--lease-ttl", str(self.opts.leader_lease_ttl),
               "--log-dir", str(self.workdir / "logs"),
               "--packages-dir", str(self.workdir / f"packages-{index}")]
        if self.opts.leader_cpu is not None:
            cmd = ["taskset", "-c", str(self.opts.leader_cpu), *cmd]
        env = {**os.environ, "WEIR_LOG_JSON": "1", "WEIR_LOG_LEVEL": "info",
               "PYTHONPATH": str(REPO_ROOT)}
        proc = spawn(cmd, log_path=self.workdir / f"controller-{index}.log", env=env,
                     cwd=REPO_ROOT)
        self.controllers.append(proc)
        return f"127.0.0.1:{port}"

    async def run(self) -> dict[str, Any]:
        """All phases; the figures."""
        opts = self.opts
        await asyncio.to_thread(self.etcd.start)
        if opts.etcd_nice and self.etcd.pid is not None:
            os.setpriority(os.PRIO_PROCESS, self.etcd.pid, opts.etcd_nice)
        store = EtcdStore(self.etcd.endpoint)
        await store.connect()
        locator = LeaderLocator(store=store)
        subs = Subscribers(locator, 1)  # the witness; the others run in processes of their own
        try:
            first = self.start_controller(0)

            async def elected() -> bool:
                return (await leader_now(store))[0] is not None

            await wait_until_async(elected, 60, "a leader")
            self.start_controller(1)
            procs = opts.sim_procs or sim_procs(opts.replicas)
            nodes = node_count(opts.nodes, procs)
            self.figures.update(nodes=nodes, sim_procs=procs)
            await self.pool.start(procs, self.etcd.endpoint, nodes, opts.node_lease_ttl,
                                  opts.channels, opts.sim_nice)
            subs.start()
            self.start_subscribers(opts.proxies - 1)
            try:
                await self.ramp(first, subs)
            except TimeoutError as exc:
                # What fell behind: how far the fleet got, and how often leadership moved.
                status = self.pool.status()
                self.figures.update(ramp_s=None, ramp_running=status.running_count(),
                                    ramp_registered=max(status.adopted.values(), default=0),
                                    leader_terms=self.leader_terms(),
                                    ramp_max_pass_ms=self.slowest_pass(),
                                    sim_node_leases_lost=self.count_logged(
                                        "sim-worker-*.log", "presence lease lost"),
                                    load_average=round(os.getloadavg()[0], 1))
                self.figures.setdefault("failures", []).append(str(exc))
                print(f"  {exc}: {self.figures}", flush=True)
                return self.figures
            await self.steady(store, subs)
            # Each of the last two is measured on its own: one that fails says so in the
            # figures (as null, with the reason) and the other still runs.
            for phase, figure in ((self.rolling_update, "deploy_s"),
                                  (self.failover, "failover_s")):
                try:
                    await phase(store)
                except TimeoutError as exc:
                    self.figures[figure] = None
                    self.figures.setdefault("failures", []).append(str(exc))
                    print(f"  {exc}", flush=True)
            self.figures["leader_terms"] = self.leader_terms()
        finally:
            await subs.close()
            await self.pool.close()
            await locator.close()
            await store.close()
        return self.figures

    async def ramp(self, address: str, subs: Subscribers) -> None:
        """Deploy every replica; wait until all run and every subscriber routes to them."""
        n = self.opts.replicas
        began = time.perf_counter()
        client = AdminClient(address, timeout=120)
        await asyncio.to_thread(client.deploy, {"applications": app_config(
            n, health_check_period_s=self.opts.health_check_period)})
        await wait_until(lambda: self.pool.status().running_count() >= n,
                         self.opts.ramp_timeout,
                         f"{n} replicas running", 0.5)
        await wait_until(lambda: subs.replicas_seen(0) >= n, 120,
                         "the witness subscriber routing to every replica", 0.5)
        self.figures["ramp_s"] = round(time.perf_counter() - began, 1)
        print(f"  {n} replicas running and routed in {self.figures['ramp_s']} s", flush=True)

    async def steady(self, store: EtcdStore, subs: Subscribers) -> None:
        """The steady state: churn, probes, and the leader's and etcd's costs."""
        await self.pool.broadcast("churn", fraction=self.opts.churn)
        await asyncio.sleep(2.0)  # the churn's first reports settle
        _, pid = await leader_elected(store, self.opts.phase_timeout)
        sims = [me := os.getpid()] + [w.proc.pid for w in self.pool.workers]
        self.log_offsets = {i: self.log_path(i).stat().st_size for i in range(2)}
        began_wall = time.time()
        rev0 = await etcd_revision(store)
        cpu0, me0, t0 = cpu_seconds(pid), cpu_seconds(me), time.perf_counter()
        sim0 = sum(map(cpu_seconds, sims))
        # The route subscribers' processes: what the fan-out costs its receiving end.
        subscribers = [proc.pid for proc, _ in self.subscriber_procs]
        subs0 = sum(map(cpu_seconds, subscribers))
        pushes: list[Probe] = []
        reports: list[Probe] = []
        marker = 1000
        while time.perf_counter() - t0 < self.opts.duration:
            round_began = time.perf_counter()
            picked = await self.pool.pick()
            if picked is None:
                raise TimeoutError("no running replica to probe")
            index, r = picked
            key, rid = (r["app"], r["deployment"]), r["replica"]
            # A replica set change: it leaves the routes (re-initializing), then returns.
            pushes.append(await self._probe(
                subs, index, rid, {"state": pb.INITIALIZING},
                lambda t, k=key, i=rid: target_of(t, k, i) is None))
            pushes.append(await self._probe(
                subs, index, rid, {"state": pb.RUNNING},
                lambda t, k=key, i=rid: target_of(t, k, i) is not None))
            # A depth report, until every subscriber has it.
            marker += 1
            reports.append(await self._probe(
                subs, index, rid, {"ongoing": marker},
                lambda t, k=key, i=rid, m=marker:
                getattr(target_of(t, k, i), "ongoing", -1) == m))
            await self.pool.call(index, "change", replica=rid, ongoing=0)
            await asyncio.sleep(max(0.0, round_began + PROBE_ROUND_S - time.perf_counter()))
        elapsed = time.perf_counter() - t0
        rev1 = await etcd_revision(store)
        cpu1, sim1 = cpu_seconds(pid), sum(map(cpu_seconds, sims))
        me1 = cpu_seconds(me)
        subs1 = sum(map(cpu_seconds, subscribers))
        steady_passes = pass_times(self.leader_log(pid), began_wall, time.time())
        arrivals = await asyncio.to_thread(self.stop_subscribers)
        push_ms = [latency_ms(p, arrivals) for p in pushes]
        if self.opts.probes_json:
            await asyncio.to_thread(Path(self.opts.probes_json).write_text, json.dumps({
                "pushes": [(p.version, p.started_wall) for p in pushes],
                "arrivals": arrivals}))
        first_ms = [ms for p in pushes if (ms := first_arrival_ms(p, arrivals)) is not None]
        report_ms = [latency_ms(p, arrivals) for p in reports]
        self.figures.update(
            route_push_p99_ms=round(p99(push_ms), 1),
            route_push_median_ms=round(statistics.median(push_ms), 1) if push_ms else None,
            report_to_route_p99_ms=round(p99(report_ms), 1),
            route_push_first_median_ms=(round(statistics.median(first_ms), 1)
                                        if first_ms else None),
            route_push_first_p99_ms=round(p99(first_ms), 1),
            leader_cpu_pct=round(100 * (cpu1 - cpu0) / elapsed, 1),
            leader_rss_mb=round(rss_mb(pid), 1),
            etcd_writes_per_s=round((rev1 - rev0) / elapsed, 1),
            sim_cpu_pct=round(100 * (sim1 - sim0) / elapsed, 1),
            coordinator_cpu_pct=round(100 * (me1 - me0) / elapsed, 1),
            subscriber_cpu_pct=round(100 * (subs1 - subs0) / elapsed, 1),
            max_pass_ms=steady_passes[0],
            slow_passes=steady_passes[1],
            probes=len(pushes) + len(reports),
            load_average=round(os.getloadavg()[0], 1),
        )
        print(f"  steady state over {elapsed:.0f} s: " + ", ".join(
            f"{k}={self.figures[k]}" for k in ("route_push_p99_ms", "route_push_median_ms",
                                               "route_push_first_median_ms",
                                               "route_push_first_p99_ms",
                                               "report_to_route_p99_ms",
                                               "leader_cpu_pct", "leader_rss_mb",
                                               "etcd_writes_per_s", "max_pass_ms",
                                               "slow_passes",
                                               "sim_cpu_pct", "subscriber_cpu_pct",
                                               "load_average")), flush=True)

    async def _probe(self, subs: Subscribers, index: int, replica_id: str,
                     change: dict[str, int], seen: Callable[[RouteTable], bool]) -> Probe:
        """Make the change to the replica (its worker reports it at once); the probe, once
        the witness saw it (or gave up). The probe is timed from the worker's change."""
        probe = subs.watch(seen)
        answer = await self.pool.call(index, "change", replica=replica_id, **change)
        if answer.get("wall"):
            probe.started_wall = answer["wall"]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(probe.done.wait(), PROBE_TIMEOUT_S)
        subs.probes.remove(probe)
        return probe

    def start_subscribers(self, count: int) -> None:
        """`count` route subscribers in `--subscriber-procs` processes of their own."""
        procs = max(1, min(self.opts.subscriber_procs, count))
        first = 1  # subscriber 0 is the witness, in this process
        for i in range(procs):
            n = count // procs + (1 if i < count % procs else 0)
            out = self.workdir / f"arrivals-{i}.json"
            cmd = [sys.executable, "-m", "bench.sim_subscribers", "--etcd",
                   self.etcd.endpoint, "--count", str(n), "--first", str(first),
                   "--out", str(out)]
            proc = spawn(cmd, log_path=self.workdir / f"subscribers-{i}.log", cwd=REPO_ROOT,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
            self.subscriber_procs.append((proc, out))
            first += n

    def stop_subscribers(self) -> list[Arrivals]:
        """Stop the subscriber processes; when each of their subscribers got each version."""
        out: list[Arrivals] = []
        for proc, path in self.subscriber_procs:
            terminate(proc, 15.0)
            if path.exists():
                for records in json.loads(path.read_text()).values():
                    out.append(([v for v, _ in records], [w for _, w in records]))
        missing = sum(1 for _, path in self.subscriber_procs if not path.exists())
        if missing:
            print(f"  {missing} subscriber process(es) left no record", flush=True)
        self.subscriber_procs = []
        return out

    def leader_terms(self) -> int:
        """How many times a controller became leader so far (1: leadership never moved)."""
        terms = 0
        for index in range(len(self.controllers)):
            with self.log_path(index).open() as f:
                terms += sum(1 for line in f if '"became leader"' in line)
        return terms

    def count_logged(self, pattern: str, text: str) -> int:
        """Lines containing `text` in the logs named by `pattern` (in the workdir)."""
        return sum(sum(1 for line in path.open() if text in line)
                   for path in self.workdir.glob(pattern))

    def slowest_pass(self) -> float | None:
        """The slowest reconcile pass either controller logged in the whole run."""
        self.log_offsets = dict.fromkeys(range(len(self.controllers)), 0)
        passes = [self.max_pass_ms(proc.pid) for proc in self.controllers]
        return max((ms for ms in passes if ms is not None), default=None)

    def log_path(self, index: int) -> Path:
        """Where controller `index` logs."""
        return self.workdir / f"controller-{index}.log"

    def max_pass_ms(self, pid: int) -> float | None:
        """The slowest reconcile pass the controller `pid` logged since `log_offsets`."""
        return pass_times(self.leader_log(pid), 0.0, float("inf"))[0]

    def leader_log(self, pid: int) -> list[dict[str, Any]]:
        """The log events of the controller `pid` since `log_offsets`."""
        events = []
        for proc, index in zip(self.controllers, range(2), strict=False):
            if proc.pid != pid:
                continue
            with self.log_path(index).open() as f:
                f.seek(self.log_offsets[index])
                lines = f.read().splitlines()
            for line in lines:
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
        return events

    async def rolling_update(self, store: EtcdStore) -> None:
        """A heavy change to one deployment (up to 1,000 replicas): until every replica
        runs the new version and no old one is left."""
        key = "sim0/Noop"
        old = set(self.pool.status().running.get(key, {}))
        target = min(APP_SIZE, self.opts.replicas)
        apps = app_config(target, num_cpus=0.5,
                          health_check_period_s=self.opts.health_check_period)
        leader, _ = await leader_now(store)
        client = AdminClient(leader or "", timeout=120, leader_wait_s=30)
        began = time.perf_counter()
        await asyncio.to_thread(client.deploy, {"applications": apps[:1]}, partial=True)

        def rolled() -> bool:
            status = self.pool.status()
            new = sum(n for v, n in status.running.get(key, {}).items() if v not in old)
            return status.deployment_replicas.get(key) == target == new

        await wait_until(rolled, self.opts.phase_timeout, "the rolling update", 0.1)
        self.figures["deploy_s"] = round(time.perf_counter() - began, 2)
        print(f"  rolling update of {target} replicas: {self.figures['deploy_s']} s", flush=True)

    async def failover(self, store: EtcdStore) -> None:
        """SIGKILL the leader; until the standby has adopted every replica (as the
        workers' statuses sent after the kill say)."""
        old, pid = await leader_elected(store, self.opts.phase_timeout)
        n = self.pool.status().replicas
        # The standbys' CPU over the failover: the new leader's work (adopting every
        # replica), against the wall time the machine took.
        standbys = [p.pid for p in self.controllers if p.pid != pid and p.poll() is None]
        standby_cpu = sum(map(cpu_seconds, standbys))
        os.kill(pid, signal.SIGKILL)
        killed, began = time.time(), time.perf_counter()

        async def adopted() -> bool:
            new, _ = await leader_now(store)
            status = self.pool.status()
            return (new is not None and new != old and status.as_of > killed
                    and status.adopted.get(new, 0) >= status.replicas)

        await wait_until_async(adopted, self.opts.phase_timeout,
                               "every replica adopted by the new leader", 0.05)
        self.figures["failover_s"] = round(time.perf_counter() - began, 2)
        self.figures["failover_leader_cpu_s"] = round(
            sum(map(cpu_seconds, standbys)) - standby_cpu, 2)
        print(f"  failover with {n} replicas adopted: {self.figures['failover_s']} s "
              f"(the new leader's CPU: {self.figures['failover_leader_cpu_s']} s)", flush=True)

    def stop(self) -> None:
        """Stop every process this run started, by PID."""
        self.pool.stop()
        for proc, _ in self.subscriber_procs:
            terminate(proc, 5.0)
        for proc in self.controllers:
            if proc.poll() is None:
                terminate(proc, 5.0)
            kill(proc)
        self.etcd.stop()


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per run, one column per figure."""
    print("  ".join(f"{k:>14}" for k in FIGURES))
    for row in rows:
        print("  ".join(f"{row.get(k)!s:>14}" for k in FIGURES))


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.control_plane_scale")
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--proxies", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=None,
                        help="simulated nodes [at least 10, a multiple of --sim-procs]")
    parser.add_argument("--sim-procs", type=int, default=0,
                        help="processes the simulated replicas and nodes run in [one per "
                             f"{STREAMS_PER_PROC} replicas]")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="seconds of steady state")
    parser.add_argument("--churn", type=float, default=0.2,
                        help="fraction of the replicas whose load changes each second")
    parser.add_argument("--health-check-period", type=float, default=None,
                        help="the deployments' health_check_period_s [Ray's default, 10]: "
                        "shorter multiplies the health checks, to weigh their cost")
    parser.add_argument("--channels", type=int, default=32,
                        help="gRPC channels the simulated replicas of a process share")
    parser.add_argument("--leader-cpu", type=int, default=None,
                        help="pin the controllers to this CPU (taskset)")
    parser.add_argument("--sim-cpu", type=int, default=None,
                        help="pin the simulation (this process and its workers)")
    parser.add_argument("--sim-nice", type=int, default=0,
                        help="run the simulated replicas' worker processes at this CPU "
                             "priority (nice -n; 0: as the rest): on two cores the simulated "
                             "side of 10,000 replicas wants more than one, and etcd and the "
                             "leader, starved, lose their leases; real replicas run on other "
                             "machines")
    parser.add_argument("--etcd-nice", type=int, default=0,
                        help="etcd's CPU priority (negative: ahead of the rest; needs root): "
                             "a real etcd runs on machines of its own (at 10,000 it did not "
                             "keep the leader's lease: docs/scale.md, round 9)")
    parser.add_argument("--ramp-timeout", type=float, default=600.0,
                        help="give up when the replicas are not all running after this")
    parser.add_argument("--phase-timeout", type=float, default=180.0,
                        help="give up on the rolling update or the failover after this")
    parser.add_argument("--workdir", default="",
                        help="keep etcd's data and the controllers' logs here [a temp dir]")
    parser.add_argument("--node-lease-ttl", type=float, default=15.0,
                        help="the simulated node agents' lease TTL: longer than a real agent's "
                             "(3 s), so that a simulation starved of CPU does not lose its nodes")
    parser.add_argument("--leader-lease-ttl", type=float, default=LEASE_TTL_S,
                        help="the controllers' lease TTL [the real one, 3 s]: longer keeps a "
                             "leader starved of CPU by other loads from losing its term")
    parser.add_argument("--etcd-no-fsync", action="store_true",
                        help="etcd without fsync: on a disk shared with other loads, fsync "
                             "stalls can hold etcd for seconds (leases lapse)")
    parser.add_argument("--subscriber-procs", type=int, default=2,
                        help="processes the route subscribers (all but one) run in")
    parser.add_argument("--json", default="", help="write the figures here")
    parser.add_argument("--probes-json", default="",
                        help="write each route-push probe (version, wall time begun) and "
                             "when every subscriber got each version here")
    opts = parser.parse_args(argv)
    if opts.sim_cpu is not None:
        os.sched_setaffinity(0, {opts.sim_cpu})
    os.environ.setdefault(auth.TOKEN_ENV, auth.new_token())
    os.environ["WEIR_LOG_LEVEL"] = "warning"  # thousands of sessions: only what goes wrong
    configure_logging("control_plane_scale")
    # SIGTERM unwinds like Ctrl-C, so that the processes below are stopped by PID.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="weir-scale-") as tmp:
        workdir = Path(opts.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        bench = Bench(opts, workdir)
        try:
            figures = asyncio.run(bench.run())
        finally:
            bench.stop()
    print_table([figures])
    if opts.json:
        Path(opts.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
