"""The embedded local cluster: a private etcd, controllers and a proxy as child processes.

`weir run` and `serve.run` start one for the life of the command or script; `weir start`
starts one detached and records it in a state file so that later commands find it and
`weir shutdown` stops it. Stopping is thorough: the leader drains and stops every replica,
then the proxy, controllers and etcd are terminated by PID, any replica still alive is
killed by its cluster id, and the temp dir is removed.

With a `token`, every gRPC server of the cluster (controllers, replicas) refuses calls
without it (weir.auth); the controllers and the proxy get it in WEIR_TOKEN, and the
controllers pass it on to the replicas they start.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from weir.auth import TOKEN_ENV
from weir.cli.cluster_state import ClusterInfo
from weir.config.tls import PASSWORD_ENV, TlsError, TlsFiles, proxy_flags, server_context
from weir.etcd.server import EtcdServer
from weir.http_servers import resolve_http_server
from weir.processes import (
    ProcessRef,
    free_port,
    replica_pids,
    signal_process,
    spare_pids,
    spawn,
    terminate,
    wait_exit,
)

log = structlog.get_logger("weir.cli.local_cluster")


@dataclass(frozen=True)
class NodeOptions:
    """What this machine's node offers (None: what the machine has)."""

    num_cpus: float | None = None
    num_gpus: float | None = None
    resources: dict[str, float] = field(default_factory=dict)
    node_id: str = ""


class LocalCluster:
    """Starts and stops one local cluster."""

    #: More `python -m weir.proxy` flags (`weir start --proxy-workers N`).
    proxy_args: tuple[str, ...] = ()

    def __init__(self, *, http_host: str = "127.0.0.1", http_port: int = 8000,
                 admin_port: int = 9500, controllers: int = 1, etcd: str = "",
                 etcd_binary: str | None = None, lease_ttl: float = 3.0,
                 http_server: str = "auto", grpc_port: int | None = None,
                 host: str = "127.0.0.1", etcd_port: int | None = None,
                 etcd_data_dir: str | None = None, joined: bool = False, proxy: bool = True,
                 node: NodeOptions | None = None, token: str = "",
                 tls: TlsFiles | None = None) -> None:
        """`host`: the address every server binds to and advertises (loopback: one
        machine). `etcd_port` / `etcd_data_dir`: where the embedded etcd listens and keeps
        its data (a temp dir by default: gone with the cluster). `joined`: this machine
        joins the cluster whose etcd is `etcd` (no etcd of its own; `controllers` may be
        0). `proxy`: run a proxy here. `node`: what this machine's node offers. `token`:
        the cluster token ("": none, the servers check nothing). `tls`: the proxy's
        certificate and key (HTTPS; `weir.config.tls`). `http_server`: the proxy's, as
        `weir.http_servers.choose_http_server` takes it (raises HttpServerMissing, a
        ValueError, if it is not installed)."""
        self.host = host
        self.etcd_port = etcd_port
        self.etcd_data_dir = etcd_data_dir
        self.joined = joined
        self.run_proxy = proxy
        self.node = node or NodeOptions()
        self.http_host = http_host
        self.http_port = http_port
        self.admin_port = admin_port
        self.num_controllers = controllers
        self.external_etcd = etcd
        self.etcd_binary = etcd_binary
        self.lease_ttl = lease_ttl
        #: "auto" resolved here: a missing server fails before any process starts.
        self.http_server = resolve_http_server(http_server)
        #: None: no gRPC ingress; 0: on a free port.
        self.grpc_port = grpc_port
        #: The cluster token ("" : none, the servers check nothing).
        self.token = token
        self.tls = tls or TlsFiles()
        self.info: ClusterInfo | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._controllers_started = 0
        self._spawned: list[int] = []
        self._controller_names: dict[str, str] = {}
        #: Made by `start`, or earlier by `packages_dir`; removed by `stop`.
        self._temp_dir: str | None = None

    def start(self, timeout: float = 30.0, *, wait_for_proxy: bool = True) -> ClusterInfo:
        """Start everything; returns when the proxy answers /-/healthz (with
        `wait_for_proxy=False`, once the first controller serves: a deploy may go in while
        the proxy starts; `wait_for_proxy` then waits for it). RuntimeError naming the
        option and the file if the proxy's TLS files cannot be used (before anything
        starts)."""
        if self.run_proxy and self.tls != TlsFiles():
            try:
                server_context(self.tls)
            except TlsError as exc:
                raise RuntimeError(f"cannot serve HTTPS: {exc}") from None
        temp_dir = self._ensure_temp_dir()
        cluster_id = uuid.uuid4().hex[:12]
        pids: dict[str, int] = {}
        info = ClusterInfo(cluster_id, self.external_etcd, [], "", temp_dir, pids,
                           joined=self.joined, host=self.host, token=self.token)
        self.info = info
        etcd: EtcdServer | None = None
        try:
            if not self.external_etcd:
                etcd = EtcdServer(self.etcd_data_dir or Path(temp_dir) / "etcd",
                                  binary=self.etcd_binary, host=self.host,
                                  client_port=self.etcd_port)
                # Not waited for yet: etcd's ~0.5 s to healthy overlaps the imports of the
                # processes below, which wait out an etcd that does not answer yet as they
                # wait out a failover.
                etcd.launch()
                etcd.detach()  # the cluster, not this object, owns etcd now
                info.etcd_endpoints = etcd.endpoint
                pids["etcd"] = etcd.pid or 0
                self._spawned.append(pids["etcd"])
            (Path(temp_dir) / "logs").mkdir()
            # The node first: by the time a deploy comes, replicas have somewhere to run.
            self.start_node_agent()
            # The proxy needs only etcd (it finds the leader there): spawned beside the
            # first controller, its start-up (~0.4 s of imports) overlaps the controller's.
            first = self._spawn_controller(self.admin_port) if self.num_controllers else None
            if self.run_proxy:
                if not self.http_port:
                    self.http_port = free_port(self.http_host)
                if self.grpc_port == 0:
                    self.grpc_port = free_port(self.http_host)
                self._spawn_proxy()
            if etcd is not None:
                etcd.wait_healthy(timeout)
            if first is not None:
                self._controller_ready(*first, timeout)
            for _ in range(1, self.num_controllers):
                self.start_controller(0, timeout)
            if self.run_proxy and wait_for_proxy:
                self._wait_ready(info, timeout)
        except BaseException:
            self.stop()
            raise
        return info

    def wait_for_proxy(self, timeout: float = 30.0) -> None:
        """Return once the proxy answers /-/healthz (it has its first route table);
        RuntimeError if a process of the cluster exited, TimeoutError after `timeout`."""
        if self.run_proxy:
            self._wait_ready(self._require_info(), timeout)

    def start_controller(self, port: int = 0, timeout: float = 30.0) -> str:
        """Start one more controller of this cluster (port 0: a free one, which it picks
        itself and reports in its ready file, so no other process can race for it).
        Returns its admin address once it serves."""
        return self._controller_ready(*self._spawn_controller(port), timeout)

    def _spawn_controller(self, port: int) -> tuple[subprocess.Popen[bytes], Path]:
        """Start a controller; returns it and the ready file it will write its address to."""
        info = self._require_info()
        index = self._controllers_started
        self._controllers_started += 1
        ready = Path(info.temp_dir) / f"controller-{index}.ready"
        logs = Path(info.temp_dir) / "logs"
        proc = self._spawn(
            [sys.executable, "-m", "weir.controller", "--etcd", info.etcd_endpoints,
             "--host", self.host, "--port", str(port), "--lease-ttl", str(self.lease_ttl),
             "--log-dir", str(logs), "--cluster-id", info.cluster_id,
             "--ready-file", str(ready), "--packages-dir", str(self.packages_dir)],
            logs / f"controller-{index}.log")
        info.pids[f"controller-{index}"] = proc.pid
        return proc, ready

    def _controller_ready(self, proc: subprocess.Popen[bytes], ready: Path,
                          timeout: float) -> str:
        """Wait for a spawned controller to serve; returns its admin address."""
        info = self._require_info()
        address = self._wait_file(ready, proc, timeout)
        info.controllers.append(address)
        self._controller_names[address] = ready.stem
        return address

    def controllers_gone(self) -> bool:
        """Every controller this object started has exited (`weir shutdown` ends them:
        whoever owns the cluster then stops the rest)."""
        info = self._require_info()
        pids = {pid for name, pid in info.pids.items() if name.startswith("controller-")}
        ours = [proc for proc in self._procs if proc.pid in pids]
        return bool(ours) and all(proc.poll() is not None for proc in ours)

    @property
    def packages_dir(self) -> Path:
        """Where this machine's controllers keep uploaded code, and its node agent the
        code it runs: beside etcd's data when that persists (a restarted cluster brings
        its apps back, and their code with them), else in the cluster's temp dir (made
        now if `start` has not run yet, so that code can be staged there while the
        cluster starts: `weir.packages.shipping.stage`)."""
        if self.etcd_data_dir:
            return Path(self.etcd_data_dir).parent / "packages"
        return Path(self._ensure_temp_dir()) / "packages"

    def _ensure_temp_dir(self) -> str:
        if self._temp_dir is None:
            self._temp_dir = tempfile.mkdtemp(prefix="weir-cluster-")
        return self._temp_dir

    def start_node_agent(self) -> int:
        """Start this machine's node agent, which runs the replicas placed on it."""
        info = self._require_info()
        logs = Path(info.temp_dir) / "logs"
        node = self.node
        cmd = [sys.executable, "-m", "weir.replica.node_agent", "--etcd", info.etcd_endpoints,
               "--host", self.host, "--log-dir", str(logs), "--cluster-id", info.cluster_id,
               "--lease-ttl", str(self.lease_ttl), "--resources", json.dumps(node.resources)]
        if self.num_controllers:
            # One cache for the machine: code a deploy uploaded (or `weir run` staged) to
            # the controllers here is where the agent looks first, so it fetches nothing.
            cmd += ["--packages-dir", str(self.packages_dir)]
        if node.num_cpus is not None:
            cmd += ["--num-cpus", str(node.num_cpus)]
        if node.num_gpus is not None:
            cmd += ["--num-gpus", str(node.num_gpus)]
        if node.node_id:
            cmd += ["--node-id", node.node_id]
        proc = self._spawn(cmd, logs / "node-agent.log")
        info.pids["node-agent"] = proc.pid
        return proc.pid

    def kill_node_agent(self, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to the node agent and reap it (its replicas keep running, to be
        adopted by the next `start_node_agent`); returns its PID."""
        pid = self._require_info().pids.pop("node-agent")
        self._signal_and_reap(pid, sig)
        return pid

    def kill_controller(self, address: str, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to the controller serving `address` (SIGKILL: a crash; SIGTERM: an
        orderly exit) and reap it; it leaves `controllers`. Returns its PID."""
        info = self._require_info()
        pid = info.pids.pop(self._controller_names.pop(address))
        info.controllers.remove(address)
        self._signal_and_reap(pid, sig)
        return pid

    def start_proxy(self, timeout: float = 30.0) -> None:
        """Start the proxy on the cluster's HTTP port; returns when it has a route table
        (/-/healthz answers 200)."""
        self._spawn_proxy()
        self._wait_ready(self._require_info(), timeout)

    def _spawn_proxy(self) -> None:
        info = self._require_info()
        logs = Path(info.temp_dir) / "logs"
        proc = self._spawn(
            [sys.executable, "-m", "weir.proxy", "--etcd", info.etcd_endpoints,
             "--http-host", self.http_host, "--http-port", str(self.http_port),
             "--http-server", self.http_server, "--grpc-port",
             str(-1 if self.grpc_port is None else self.grpc_port), *proxy_flags(self.tls),
             *self.proxy_args],
            logs / "proxy.log", {PASSWORD_ENV: self.tls.keyfile_password})
        info.pids["proxy"] = proc.pid
        if self.grpc_port is not None:
            info.grpc = f"127.0.0.1:{self.grpc_port}"
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::") else self.http_host
        info.http = f"{host}:{self.http_port}"

    def kill_proxy(self, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to the proxy and reap it; returns its PID."""
        info = self._require_info()
        pid = info.pids.pop("proxy")
        self._signal_and_reap(pid, sig)
        return pid

    @property
    def spawned_pids(self) -> list[int]:
        """Every process this object started, alive or not (etcd included)."""
        return list(self._spawned)

    def _require_info(self) -> ClusterInfo:
        if self.info is None:
            raise RuntimeError("the local cluster is not started")
        return self.info

    def _spawn(self, cmd: list[str], log_path: Path,
               extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        # WEIR_TOKEN is always set, even empty: a child never takes a token from a state
        # file (which may be another cluster's).
        env = {**os.environ, TOKEN_ENV: self.token, **(extra_env or {})}
        proc = spawn(cmd, log_path=log_path, env=env, detached=True)
        self._procs.append(proc)
        self._spawned.append(proc.pid)
        return proc

    def _signal_and_reap(self, pid: int, sig: int) -> None:
        proc = self._child(pid)
        signal_process(proc, sig)
        if not wait_exit(proc, 10.0):
            raise TimeoutError(f"process {pid} still runs 10 s after signal {sig}")

    def _child(self, pid: int) -> ProcessRef:
        """Our Popen of `pid` if we started it (so that it is reaped through it), else pid."""
        return next((proc for proc in self._procs if proc.pid == pid), pid)

    def _wait_file(self, path: Path, proc: subprocess.Popen[bytes], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and (text := path.read_text().strip()):
                return text
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(map(str, proc.args[:3]))} exited with code "  # type: ignore[index]
                                   f"{proc.returncode}; see {path.parent}/logs")
            time.sleep(0.02)
        raise TimeoutError(f"{path.name} did not appear within {timeout:.0f} s")

    def _wait_ready(self, info: ClusterInfo, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        scheme = "https" if self.tls.enabled else "http"
        url = f"{scheme}://{info.http}/-/healthz"
        # The proxy's certificate may be self-signed: readiness is all this asks of it.
        context = ssl._create_unverified_context() if self.tls.enabled else None
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None and proc.pid in info.pids.values():
                    raise RuntimeError(
                        f"{' '.join(map(str, proc.args[:3]))} exited with code "  # type: ignore[index]
                        f"{proc.returncode}; see the logs in {info.temp_dir}/logs")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=1, context=context) as resp:
                    if resp.status == 200:
                        return
            time.sleep(0.05)
        raise TimeoutError(f"the local cluster was not ready within {timeout:.0f} s; "
                           f"see the logs in {info.temp_dir}/logs")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every process of the cluster and remove its temp dir."""
        if self.info is not None:
            stop_cluster(self.info, timeout, children=self._procs)
        for proc in self._procs:  # any that exited on its own is reaped here
            terminate(proc, 1.0)
        self._procs = []
        self.info = None
        if self._temp_dir is not None:  # made by `packages_dir` for a start that never came
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


def stop_cluster(info: ClusterInfo, timeout: float = 10.0,
                 children: Sequence[subprocess.Popen[bytes]] = ()) -> None:
    """Stop a cluster from its ClusterInfo (also from another process than its starter).

    `children`: the starter's Popens of its processes, so that they are reaped through them.
    """
    from weir.cli.admin_client import AdminClient

    ours: dict[int, ProcessRef] = {proc.pid: proc for proc in children}
    deadline = time.monotonic() + timeout
    # Any live controller will do: a standby forwards the shutdown to the leader. A machine
    # that joined another's cluster stops only its own processes: its replicas are placed
    # elsewhere.
    if not info.joined:
        with contextlib.suppress(Exception):
            AdminClient(info.address, timeout=max(1.0, timeout - 2),
                        token=info.token).shutdown()
    for name, pid in sorted(info.pids.items()):
        if name.startswith(("proxy", "controller", "node-agent")):
            terminate(ours.get(pid, pid), max(0.5, min(3.0, deadline - time.monotonic())))
    # A node agent's warm spare exits as its agent does (its stdin closes); by PID besides,
    # for an agent that could not be stopped.
    for pid in replica_pids(info.cluster_id) + spare_pids(info.cluster_id):
        terminate(pid, 0.5)
    if "etcd" in info.pids:
        terminate(ours.get(info.pids["etcd"], info.pids["etcd"]), 3.0)
    shutil.rmtree(info.temp_dir, ignore_errors=True)
