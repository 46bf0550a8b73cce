"""Proxy workers: `--proxy-workers N` runs N proxy processes on one HTTP (and gRPC) port.

The first process is worker 0: it starts workers 1..N-1 as children (the same command line
with `--worker-index i`), serves like any of them, and stops them when it stops. Each
worker binds the port with SO_REUSEPORT, so the kernel spreads new connections over them;
each follows the route table itself and registers under /weir/proxies/ with an id of its
own, so `weir status` lists every worker. A child dies with worker 0 (PR_SET_PDEATHSIG),
so a SIGKILLed proxy leaves no worker behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import signal
import socket
import sys
from collections.abc import Sequence

import structlog

from weir.cancellation import within

log = structlog.get_logger("weir.proxy")

#: How long a worker has to stop after SIGTERM before it is killed.
WORKER_STOP_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1


def worker_argv(argv: Sequence[str], index: int) -> list[str]:
    """Worker `index`'s command-line flags, from worker 0's: the same, with its index and
    without the ready file (worker 0 writes it). Pure."""
    flags: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--ready-file", "--worker-index"):
            skip = True
            continue
        if arg.startswith(("--ready-file=", "--worker-index=")):
            continue
        flags.append(arg)
    return [*flags, "--worker-index", str(index)]


def worker_id(proxy_id: str, index: int, workers: int) -> str:
    """A worker's proxy id: the proxy's, with `-w<index>` when there are several. Pure."""
    return proxy_id if workers <= 1 else f"{proxy_id}-w{index}"


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: only async-signal-safe work.
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the parent's orderly stop still stops its workers


async def start_workers(argv: Sequence[str], workers: int
                        ) -> list[asyncio.subprocess.Process]:
    """Start workers 1..workers-1 of this proxy (whose flags are `argv`)."""
    started = []
    for index in range(1, workers):
        started.append(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "weir.proxy", *worker_argv(argv, index),
            stdin=asyncio.subprocess.DEVNULL, preexec_fn=_die_with_parent))
    log.info("proxy workers started", workers=workers, pids=[p.pid for p in started])
    return started


async def stop_workers(started: Sequence[asyncio.subprocess.Process],
                       grace_s: float = WORKER_STOP_GRACE_S) -> None:
    """SIGTERM each worker, wait up to `grace_s`, SIGKILL the ones still running."""
    for proc in started:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            await within(proc.wait(), grace_s)
        except TimeoutError:
            log.warning("proxy worker ignored SIGTERM; killed", pid=proc.pid)
            proc.kill()
            await proc.wait()


def listening_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to host:port (not yet listening), shared by the workers when
    `reuse_port` (SO_REUSEPORT)."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
