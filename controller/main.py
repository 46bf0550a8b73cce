"""The controller process: campaign for leadership, lead while elected, serve the admin API.

Controllers keep no state of their own. Each registers itself under /weir/controllers/
(bound to a lease, so a dead one disappears), campaigns for /weir/leader, and while it
leads runs a `Leader`. Losing the lease ends the term: the Leader stops, replicas keep
serving, and the controller campaigns again. On SIGTERM a leader revokes its lease so that
a standby takes over at once instead of after the TTL.
"""

from __future__ import annotations

# First: structlog without rich (weir.plain_structlog says why).
import weir.plain_structlog  # noqa: F401

# isort: split
import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import structlog

from weir import auth, grpc_health
from weir.cancellation import event_within, within
from weir.controller.admin import AdminService
from weir.controller.app_builder import WARM_CHILD_IDLE_S, let_warm_child_go
from weir.controller.election import Election
from weir.controller.leader import Leader
from weir.controller.term_store import TermStore
from weir.dataplane.route_table import parse_leader
from weir.dataplane.transport import CHANNEL_OPTIONS
from weir.etcd.etcd_store import EtcdStore
from weir.etcd.keys import (
    APPS_PREFIX,
    CONTROLLERS_PREFIX,
    HTTP_OPTIONS_KEY,
    LEADER_KEY,
    LOGGING_CONFIG_KEY,
    REPLICAS_PREFIX,
    SHUTDOWN_KEY,
    shut_down_since,
)
from weir.etcd.presence import Presence
from weir.etcd.store import StoreError
from weir.gc_watch import collect_deeply_every, watch_collections
from weir.metrics import controller_metrics, serve_metrics
from weir.packages.cache import PackageCache
from weir.packages.resolver import default_packages_dir
from weir.packages.service import PackageService
from weir.protos import weir_pb2_grpc as pb_grpc
from weir.runtime import configure_logging, run_until_signalled
from weir.system_logging import follow_system_logging

log = structlog.get_logger("weir.controller")

SHUTDOWN_WAIT_S = 30.0
#: How long a starting controller waits to be listed before it reports ready anyway.
PRESENCE_WAIT_S = 10.0
#: How long a starting controller polls for etcd to answer before it registers (a local
#: cluster starts its etcd and controllers together).
ETCD_START_WAIT_S = 10.0
_ETCD_POLL_S = 0.02
#: How long a call that needs the leader waits for this process's term to start, once it
#: won the election (a term starts in well under a second: adoption, first table).
LEADER_START_WAIT_S = 5.0


class Controller:
    """One controller process."""

    def __init__(self, opts: argparse.Namespace,
                 first_build_child: asyncio.Future[subprocess.Popen[bytes]] | None = None
                 ) -> None:
        self.opts = opts
        self.id = uuid.uuid4().hex[:8]
        self.started_at = time.time()
        self.store = EtcdStore(opts.etcd)
        self.leader: Leader | None = None
        self.leader_address = ""
        self.address = ""
        self.exit = asyncio.Event()
        #: Set while this process leads and its Leader is started.
        self._leading = asyncio.Event()
        #: From the election won until the term's Leader is started.
        self._term_starting = False
        #: The packages deploys uploaded here; served to node agents and other controllers.
        self.packages = PackageCache(Path(opts.packages_dir) if opts.packages_dir
                                     else default_packages_dir())
        #: A build child started with the process, for its first term if one comes soon
        #: (`python -m weir.controller` starts it before its imports).
        self._first_warm = first_build_child

    async def run(self, signalled: asyncio.Event) -> None:
        """Serve until signalled or told to shut down."""
        asyncio.get_running_loop().call_later(WARM_CHILD_IDLE_S, self._take_first_warm, True)
        await self.store.connect()
        server = auth.server(options=CHANNEL_OPTIONS)
        pb_grpc.add_ControllerServicer_to_server(
            AdminService(self.store, lambda: self.leader, lambda: self.leader_address,
                         self.shutdown_cluster, self._started_leader), server)
        pb_grpc.add_PackagesServicer_to_server(PackageService(self.packages), server)
        await grpc_health.serve_health(server, ["weir.Controller", "weir.Packages"])
        port = server.add_insecure_port(f"{self.opts.host}:{self.opts.port}")
        if port == 0:
            log.error("cannot listen", host=self.opts.host, port=self.opts.port)
            sys.exit(1)
        await server.start()
        self.address = f"{self.opts.host}:{port}"
        structlog.contextvars.bind_contextvars(controller_id=self.id, address=self.address)
        about: dict[str, object] = {"id": self.id, "address": self.address, "pid": os.getpid()}
        if self.opts.metrics_port >= 0:
            about["metrics"] = serve_metrics(self.opts.host, self.opts.metrics_port)
        identity = json.dumps(about)
        election = Election(self.store, identity.encode(), ttl=self.opts.lease_ttl)
        presence = Presence(self.store, CONTROLLERS_PREFIX + self.id, identity.encode(),
                            self.opts.lease_ttl)
        if await _etcd_answers(self.store, ETCD_START_WAIT_S) is not None:
            # A standby joining a led cluster: the build child started with the process
            # (for a first term that follows a cluster's start at once) is not needed.
            self._take_first_warm(let_go=True)
        presence.start()
        await event_within(presence.registered, PRESENCE_WAIT_S)
        log.info("controller up", address=self.address)
        if self.opts.ready_file:
            await asyncio.to_thread(_write_atomically, Path(self.opts.ready_file), self.address)
        tasks = [asyncio.get_running_loop().create_task(self._lead(election)),
                 asyncio.get_running_loop().create_task(self._follow_leader(election)),
                 asyncio.get_running_loop().create_task(
                     follow_system_logging(self.store, "controller", self.id)),
                 asyncio.get_running_loop().create_task(collect_deeply_every())]
        stop_wait = asyncio.get_running_loop().create_task(signalled.wait())
        exit_wait = asyncio.get_running_loop().create_task(self.exit.wait())
        await asyncio.wait({stop_wait, exit_wait}, return_when=asyncio.FIRST_COMPLETED)
        for task in (*tasks, stop_wait, exit_wait):
            task.cancel()
        self._take_first_warm(let_go=True)
        if self.leader is not None:
            await self.leader.stop()
            self.leader = None
        try:
            if election.is_leader:
                await election.resign()
        except StoreError:
            pass
        await presence.withdraw()
        await server.stop(0.5)
        await self.store.close()
        log.info("controller stopped")

    async def _lead(self, election: Election) -> None:
        while True:
            await election.campaign()
            self._term_starting = True
            self.leader_address = self.address
            # Every write of the term is guarded on it (`weir.controller.term_store`).
            term_store = TermStore(self.store, LEADER_KEY, election.term_revision)
            leader = Leader(term_store, python_executable=sys.executable,
                            cluster_id=self.opts.cluster_id, packages=self.packages,
                            address=self.address)
            # A deploy often follows a term's start (a cluster just started): its build
            # finds a child with Weir imported already.
            leader.builder.start_warm_child(self._take_first_warm())
            try:
                await leader.start()
            finally:
                self._term_starting = False
            self.leader = leader
            self._leading.set()
            controller_metrics().leadership(True)
            await election.lost.wait()
            log.warning("leadership lost; back to standby")
            self._leading.clear()
            controller_metrics().leadership(False)
            self.leader = None
            self.leader_address = ""
            await leader.stop()

    async def _started_leader(self) -> Leader | None:
        """The Leader once started, if this process won the election and is starting its
        term (None at once otherwise, or after LEADER_START_WAIT_S). Won is what etcd
        says: a caller that watches the leader key can call before this process's own
        campaign has returned."""
        if self.leader is not None or not self.address:
            return self.leader
        if not self._term_starting:
            try:
                kv = await self.store.get(LEADER_KEY)
            except StoreError:
                return None
            if kv is None or parse_leader(kv.value) != self.address:
                return None
        await event_within(self._leading, LEADER_START_WAIT_S)
        return self.leader

    def _take_first_warm(self, let_go: bool = False
                         ) -> asyncio.Future[subprocess.Popen[bytes]] | None:
        """The build child started with the process, if no term took it yet (`let_go`:
        none will: end it)."""
        warm, self._first_warm = self._first_warm, None
        if warm is not None and let_go:
            let_warm_child_go(warm)
            return None
        return warm

    async def _follow_leader(self, election: Election) -> None:
        """Keep the leader's address fresh (for redirects), depose a leader whose process
        is gone, and watch for cluster shutdown."""
        while True:
            try:
                kv = await self.store.get(LEADER_KEY)
                self.leader_address = parse_leader(kv.value) if kv is not None else ""
                if (kv is not None and self.leader is None
                        and self.leader_address != self.address
                        and await _nothing_listens(self.leader_address)):
                    await election.depose(kv.value, f"nothing listens on {self.leader_address}")
                shutdown = await self.store.get(SHUTDOWN_KEY)
                if (shut_down_since(shutdown.value if shutdown else None, self.started_at)
                        and self.leader is None):
                    log.info("cluster shutdown requested")
                    self.exit.set()
            except StoreError:
                controller_metrics().etcd_errors("follow_leader").inc()
                # Never redirect clients to a leader we can no longer vouch for.
                if self.leader is None:
                    self.leader_address = ""
            await asyncio.sleep(0.25)

    async def shutdown_cluster(self) -> None:
        """Remove every app, wait for the replicas to stop, and tell every controller to exit."""
        leader = self.leader
        if leader is None:
            return
        log.info("shutting down the cluster")
        await self.store.delete_prefix(APPS_PREFIX)
        await self.store.delete(HTTP_OPTIONS_KEY)
        await self.store.delete(LOGGING_CONFIG_KEY)
        leader.wake()
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        # Records change as the reconcile loop stops replicas; poll them with a deadline.
        while leader.records and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        # Whatever did not drain in time: unassigned, node agents kill it.
        await self.store.delete_prefix(REPLICAS_PREFIX)
        await self.store.put(SHUTDOWN_KEY, repr(time.time()).encode())
        asyncio.get_running_loop().call_later(0.2, self.exit.set)


async def _nothing_listens(address: str, probes: int = 2) -> bool:
    """Whether connections to `address` are refused, `probes` times 50 ms apart: the
    process that served it is gone. A timeout is not proof (it may be a partition)."""
    host, _, port = address.rpartition(":")
    for attempt in range(probes):
        if attempt:
            await asyncio.sleep(0.05)
        try:
            _, writer = await within(
                asyncio.open_connection(host.strip("[]"), int(port)), 0.5)
        except ConnectionRefusedError:
            continue
        except (OSError, TimeoutError, ValueError):
            return False
        writer.close()
        return False
    return True


async def _etcd_answers(store: EtcdStore, timeout: float) -> bytes | None:
    """Return once etcd answers a read, or after `timeout`: a controller started beside its
    etcd registers and campaigns as soon as etcd is up, rather than a retry's pause (0.5 s
    for the presence) after its first attempt failed. Returns the leader key's value (None:
    no leader, or etcd did not answer)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            kv = await store.get(LEADER_KEY)
            return kv.value if kv is not None else None
        except StoreError:
            if time.monotonic() >= deadline:
                return None  # the presence and the election wait it out from here
        await asyncio.sleep(_ETCD_POLL_S)


def _write_atomically(path: Path, text: str) -> None:
    scratch = path.with_suffix(".partial")
    scratch.write_text(text)
    os.replace(scratch, path)


def main(argv: list[str] | None = None,
         first_build_child: subprocess.Popen[bytes] | None = None) -> None:
    """Entry point of `python -m weir.controller`; `first_build_child`: a warm build child
    (`weir.warm_process.start_warm`) it started before importing this module."""
    parser = argparse.ArgumentParser(prog="python -m weir.controller")
    parser.add_argument("--etcd", required=True, help="etcd endpoints, comma-separated")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9500)
    parser.add_argument("--lease-ttl", type=float, default=3.0)
    parser.add_argument("--log-dir", default=os.path.join(tempfile.gettempdir(), "weir-logs"))
    parser.add_argument("--cluster-id", default="")
    parser.add_argument("--ready-file", default="")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="Serve Prometheus metrics on this port (0: any free port; "
                             "-1: none); `weir status` lists the address.")
    parser.add_argument("--packages-dir", default="",
                        help="where uploaded code packages are kept [default: "
                             "WEIR_HOME/packages, else a folder in the temp dir]")
    opts = parser.parse_args(argv)
    # Reconfigurable: it follows the cluster's logging_config (weir.system_logging).
    configure_logging("controller", reconfigurable=True)
    # Its heap is mostly sessions and records that live long: frozen after each full
    # collection, and collected whole now and then (weir.gc_watch).
    watch_collections(freeze_after_full=True)
    # Before anything serves or spawns: its server, its health checks and its replicas
    # then share one token.
    auth.pin_token()

    async def run(signalled: asyncio.Event) -> None:
        started = None
        if first_build_child is not None:
            started = asyncio.get_running_loop().create_future()
            started.set_result(first_build_child)
        await Controller(opts, started).run(signalled)

    run_until_signalled(run)
