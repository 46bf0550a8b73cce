"""The node agent: one per machine; runs the replicas the leader assigns to its node.

Design. The agent registers its node (what it offers) under a lease, and keeps in that
record the replicas it runs. The leader places replicas by writing their records with this
node's id; the agent watches the records and, level-triggered, makes the machine match:
start what is assigned and not running, kill what runs and is no longer assigned, report
what runs. The decision is the pure `plan_node`; the agent only moves bytes, and a
`ReplicaLauncher` carries the plan out: local processes here, Kubernetes pods in
`weir.replica.pod_agent`.

Failure it guards against: an agent that restarts (or a machine whose agent was killed)
must not start a second copy of a replica that still runs: a restarted agent first adopts
every assigned replica its launcher still finds running (a process by PID and command
line, or by the mark file of one started from the warm spare; a pod by its labels). A
node whose agent is gone for a whole lease TTL disappears from etcd; the leader then
places its replicas elsewhere, and an agent that comes back kills the replicas no longer
assigned to it.
"""

from __future__ import annotations

# First: structlog without rich (weir.plain_structlog says why).
import weir.plain_structlog  # noqa: F401

# isort: split
import argparse
import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from weir.cancellation import within
from weir.etcd.etcd_store import EtcdStore
from weir.etcd.keys import (
    APPS_PREFIX,
    NODES_PREFIX,
    REPLICAS_PREFIX,
    SHUTDOWN_KEY,
    shut_down_since,
)
from weir.etcd.presence import Presence
from weir.etcd.records import NodeRecord, ReplicaRecord
from weir.etcd.store import Store, StoreError
from weir.packages.cache import PackageCache
from weir.packages.resolver import PACKAGES_DIR_NAME, prepare_app_env
from weir.replica.launcher import KeepsSpare, ReplicaLauncher
from weir.replica.local_launcher import LocalProcessLauncher
from weir.runtime import configure_logging, run_until_signalled
from weir.runtime_env import RuntimeEnvError, package_hash

log = structlog.get_logger("weir.replica.node_agent")

#: How often the agent looks at its assignments and its processes without a watch event.
RECONCILE_S = 0.25


@dataclass(frozen=True)
class NodePlan:
    """What the agent does in one pass."""

    start: tuple[ReplicaRecord, ...] = ()
    kill: tuple[int, ...] = ()


def plan_node(assigned: Mapping[str, ReplicaRecord], running: Mapping[str, int],
              done: Collection[str]) -> NodePlan:
    """Start each assigned replica that never ran: not running, not `done` here (ended or
    failed to start), and not registered elsewhere before (a PID in its record: it ran, so
    the leader replaces it if it is gone; a replica is started once). Kill each running
    process whose replica is no longer assigned here."""
    return NodePlan(
        start=tuple(r for rid, r in sorted(assigned.items())
                    if rid not in running and rid not in done and not r.pid),
        kill=tuple(pid for rid, pid in sorted(running.items()) if rid not in assigned),
    )


class NodeAgent:
    """Keeps this machine's replica processes in line with the node's assignments."""

    def __init__(self, store: Store, node: NodeRecord, launcher: ReplicaLauncher,
                 lease_ttl: float, packages: PackageCache | None = None, *,
                 replicas_fetch_code: bool = False) -> None:
        self.store = store
        #: Whether each replica fetches its own code packages (a pod: this machine's cache
        #: is not the replica's), so the agent prepares its runtime_env without them.
        self.replicas_fetch_code = replicas_fetch_code
        #: This machine's code packages, fetched from the controllers on first use.
        self.packages = packages
        self.node = node
        self.launcher = launcher
        self.presence = Presence(store, NODES_PREFIX + node.node_id, node.to_bytes(),
                                 lease_ttl)
        #: Replica id -> handle (a PID for processes) of the replicas this agent runs.
        self.running: dict[str, int] = {}
        #: Replica id -> why it could not be started here, or why it ended (as the
        #: launcher tells: a pod evicted, say).
        self.failed: dict[str, str] = {}
        #: Replicas that ran here and ended: never started again (the leader replaces them).
        self.ended: set[str] = set()
        self._changed = asyncio.Event()
        #: The record as etcd last took it.
        self._published: NodeRecord | None = None
        #: App -> its code packages being fetched ahead of its first replica here.
        self._prefetching: dict[str, asyncio.Task[None]] = {}

    async def run(self, signalled: asyncio.Event) -> None:
        """Serve until signalled; replicas keep running after the agent exits."""
        self.presence.start()
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(self._watch())
        prefetcher = loop.create_task(self._watch_apps())
        log.info("node agent up", node_id=self.node.node_id, host=self.node.host,
                 resources=self.node.resources)
        adopted = False
        while not signalled.is_set():
            try:
                if await self._shut_down():
                    break
                assigned = await self._assigned()
                if not adopted:
                    await self._adopt(assigned)
                    adopted = True
                await self._reconcile(assigned)
            except StoreError as exc:
                log.warning("cannot read assignments; replicas keep running", error=str(exc))
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await within(self._wait_any(signalled), RECONCILE_S)
        watcher.cancel()
        prefetcher.cancel()
        for task in self._prefetching.values():
            task.cancel()
        if isinstance(self.launcher, KeepsSpare):
            await self.launcher.close()
        await self.presence.withdraw()
        log.info("node agent stopped", replicas_left_running=len(self.running))

    async def _wait_any(self, signalled: asyncio.Event) -> None:
        changed = asyncio.ensure_future(self._changed.wait())
        stop = asyncio.ensure_future(signalled.wait())
        try:
            await asyncio.wait({changed, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            stop.cancel()

    async def _watch(self) -> None:
        """Wake the loop as soon as an assignment changes (the loop polls besides)."""
        while True:
            try:
                async for _ in self.store.watch_prefix(REPLICAS_PREFIX):
                    self._changed.set()
            except StoreError:
                pass
            await asyncio.sleep(RECONCILE_S)

    async def _watch_apps(self) -> None:
        """On each app goal written (a deploy): fetch the app's code packages if this
        machine lacks them, so that its first replica here starts without waiting for them
        (the app's build runs meanwhile; a failure is left for the replica's start to
        report); and tell a launcher that keeps a warm spare that replicas may come."""
        spare = self.launcher if isinstance(self.launcher, KeepsSpare) else None
        prefetch = self.packages is not None and not self.replicas_fetch_code
        if spare is None and not prefetch:
            return
        while True:
            try:
                async for event in self.store.watch_prefix(APPS_PREFIX):
                    if event.kind != "put":
                        continue
                    if spare is not None:
                        spare.expect_replicas()
                        self._changed.set()  # the next pass starts the spare
                    app = event.key[len(APPS_PREFIX):]
                    if (prefetch and self._lacks_code(event.value)
                            and (app not in self._prefetching
                                 or self._prefetching[app].done())):
                        self._prefetching[app] = asyncio.get_running_loop().create_task(
                            self._prefetch(app))
            except StoreError:
                pass
            await asyncio.sleep(RECONCILE_S)

    def _lacks_code(self, goal: bytes) -> bool:
        """Whether an app goal names a package this machine's cache does not hold."""
        try:
            env = json.loads(goal)["config"].get("runtime_env") or {}
            named = [env.get("working_dir"), *(env.get("py_modules") or [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            return False
        hashes = [h for h in map(package_hash, named) if h]
        return self.packages is not None and not all(map(self.packages.has, hashes))

    async def _prefetch(self, app: str) -> None:
        log.info("fetching an app's code ahead of its replicas", app=app)
        try:
            await prepare_app_env(self.store, app, self.packages)
        except Exception as exc:  # the replica's start fetches again and says why
            log.debug("cannot fetch an app's code ahead", app=app, error=str(exc))

    async def _shut_down(self) -> bool:
        """The cluster was shut down since this agent started: stop its replicas and exit."""
        kv = await self.store.get(SHUTDOWN_KEY)
        if not shut_down_since(kv.value if kv else None, self.node.started_at):
            return False
        log.info("cluster shut down; stopping this node's replicas", replicas=len(self.running))
        for rid, pid in list(self.running.items()):
            await self.launcher.kill(replace(_orphan(rid), pid=pid))
        self.running.clear()
        return True

    async def _assigned(self) -> dict[str, ReplicaRecord]:
        items, _ = await self.store.get_prefix(REPLICAS_PREFIX)
        records = (ReplicaRecord.from_bytes(kv.value) for kv in items)
        return {r.replica_id: r for r in records if r.node_id == self.node.node_id}

    async def _adopt(self, assigned: Mapping[str, ReplicaRecord]) -> None:
        """After a restart: take over the assigned replicas that still run."""
        for rid, pid in (await self.launcher.adopt(assigned, self.node.replicas)).items():
            self.running[rid] = pid
            log.info("adopted replica", replica_id=rid, pid=pid)

    async def _reconcile(self, assigned: Mapping[str, ReplicaRecord]) -> None:
        running = {rid: replace(assigned.get(rid) or _orphan(rid), pid=pid)
                   for rid, pid in self.running.items()}
        for rid, why in (await self.launcher.ended(running)).items():
            log.info("replica ended", replica_id=rid, pid=self.running.pop(rid, 0), reason=why)
            self.ended.add(rid)
            if why:
                self.failed[rid] = why
        self.failed = {rid: why for rid, why in self.failed.items() if rid in assigned}
        self.ended &= set(assigned)
        plan = plan_node(assigned, self.running, self.ended | set(self.failed))
        for pid in plan.kill:
            rid = next(r for r, p in self.running.items() if p == pid)
            log.info("killing replica no longer assigned here", replica_id=rid, pid=pid)
            await self.launcher.kill(replace(_orphan(rid), pid=pid))
            del self.running[rid]
        for record in plan.start:
            await self._start(record)
        if isinstance(self.launcher, KeepsSpare):
            await self.launcher.tend()
        self.node = replace(self.node, replicas=dict(self.running), failed=dict(self.failed))
        if self.node != self._published and await self.presence.update(self.node.to_bytes()):
            self._published = self.node

    async def _start(self, record: ReplicaRecord) -> None:
        prefetch = self._prefetching.get(record.app)
        if prefetch is not None:
            # Its code is on the way: wait for it rather than fetch it a second time.
            await asyncio.wait({prefetch})
        try:
            env = await prepare_app_env(self.store, record.app, self.packages,
                                        fetch_packages=not self.replicas_fetch_code)
            pid = await self.launcher.launch(record, env)
        except (RuntimeEnvError, OSError) as exc:
            self.failed[record.replica_id] = (
                f"node {self.node.node_id} cannot start replica {record.replica_id}: {exc}")
            log.warning("cannot start replica", replica_id=record.replica_id, error=str(exc))
            return
        self.running[record.replica_id] = pid
        log.info("started replica", replica_id=record.replica_id, pid=pid)


async def with_previous_replicas(store: Store, node: NodeRecord) -> NodeRecord:
    """The node as it starts: with the replicas its previous agent listed (if its record is
    still there), so that the new agent can adopt them by PID."""
    try:
        previous = await store.get(NODES_PREFIX + node.node_id)
    except StoreError:
        return node
    return replace(node, replicas=NodeRecord.from_bytes(previous.value).replicas
                   ) if previous else node


def _orphan(replica_id: str) -> ReplicaRecord:
    return ReplicaRecord(replica_id, "", "", "", pid=0, started_at=0.0)


def default_resources(num_cpus: float | None, num_gpus: float | None,
                      custom: Mapping[str, float],
                      environ: Mapping[str, str] = os.environ) -> dict[str, float]:
    """What a node offers: as told, else WEIR_NUM_CPUS / WEIR_NUM_GPUS (for containers,
    whose CPU count is the host's, and for test machines that oversubscribe on purpose),
    else the machine's CPUs and the GPUs nvidia-smi lists; plus custom resources."""
    if num_cpus is None and environ.get("WEIR_NUM_CPUS"):
        num_cpus = float(environ["WEIR_NUM_CPUS"])
    if num_gpus is None and environ.get("WEIR_NUM_GPUS"):
        num_gpus = float(environ["WEIR_NUM_GPUS"])
    out = {"CPU": float(num_cpus if num_cpus is not None else (os.cpu_count() or 1)),
           "GPU": float(num_gpus if num_gpus is not None else _count_gpus())}
    out.update({str(k): float(v) for k, v in custom.items()})
    return out


def _count_gpus() -> int:
    """GPUs `nvidia-smi -L` lists (0 where it is absent)."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m weir.replica.node_agent`."""
    parser = argparse.ArgumentParser(prog="python -m weir.replica.node_agent")
    parser.add_argument("--etcd", required=True, help="etcd endpoints, comma-separated")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address this node's replicas bind to and advertise")
    parser.add_argument("--node-id", default="")
    parser.add_argument("--num-cpus", type=float, default=None)
    parser.add_argument("--num-gpus", type=float, default=None)
    parser.add_argument("--resources", default="{}", help='JSON, e.g. {"accelerator": 2}')
    parser.add_argument("--labels", default="{}", help="JSON object of labels")
    parser.add_argument("--cluster-id", default="")
    parser.add_argument("--log-dir", required=True)
    parser.add_argument("--lease-ttl", type=float, default=3.0)
    parser.add_argument("--warm-replica", default=os.environ.get("WEIR_WARM_REPLICA", "1"),
                        choices=["0", "1"],
                        help="keep a replica process started ahead for the next replica "
                             "(1, the default) or start each cold (0); WEIR_WARM_REPLICA sets it")
    parser.add_argument("--packages-dir", default="",
                        help="this machine's cache of code packages [default: "
                             "<log-dir>/packages]")
    opts = parser.parse_args(argv)
    node_id = opts.node_id or f"{socket.gethostname()}-{opts.host}"
    configure_logging("node_agent", node_id=node_id)
    node = NodeRecord(node_id=node_id, host=opts.host,
                      resources=default_resources(opts.num_cpus, opts.num_gpus,
                                                  json.loads(opts.resources)),
                      labels=json.loads(opts.labels), started_at=time.time(), pid=os.getpid())

    async def serve(signalled: asyncio.Event) -> None:
        store = EtcdStore(opts.etcd)
        await store.connect()
        start = await with_previous_replicas(store, node)
        launcher = LocalProcessLauncher(opts.etcd, opts.log_dir, opts.cluster_id, opts.host,
                                        keep_spare=opts.warm_replica == "1")
        try:
            packages = PackageCache(Path(opts.packages_dir or
                                         Path(opts.log_dir) / PACKAGES_DIR_NAME))
            await NodeAgent(store, start, launcher, opts.lease_ttl, packages).run(signalled)
        finally:
            await store.close()

    Path(opts.log_dir).mkdir(parents=True, exist_ok=True)
    run_until_signalled(serve)


if __name__ == "__main__":
    main()
