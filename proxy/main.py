"""The proxy process: the HTTP ingress on hypercorn (or uvicorn), fed by the route table.

The route table comes by a stream from the leading controller; the proxy keeps serving the
last one while no controller is reachable. It registers itself under /weir/proxies/ with a
lease, so `weir status` lists live proxies only.
"""

from __future__ import annotations

# First: structlog without rich (weir.plain_structlog says why).
import weir.plain_structlog  # noqa: F401

# isort: split
import argparse
import asyncio
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from weir import auth, tracing
from weir.config.tls import PASSWORD_ENV, TlsError, TlsFiles, server_context
from weir.dataplane.caller import DataPlane
from weir.dataplane.route_table import LeaderLocator
from weir.etcd.etcd_store import EtcdStore
from weir.etcd.keys import PROXIES_PREFIX
from weir.etcd.presence import Presence
from weir.etcd.store import StoreError
from weir.http_servers import HTTP_SERVER_CHOICES, HttpServerMissing, resolve_http_server
from weir.metrics import proxy_metrics
from weir.proxy.admission import DEFAULT_MAX_LOOP_LAG_S, Admission, AdmissionGate
from weir.proxy.dashboard import Dashboard
from weir.proxy.http_app import ProxyApp
from weir.proxy.hypercorn_admission import admission_in_protocol
from weir.proxy.ingress_limits import (
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
    HeaderCountLimit,
    IngressLimits,
)
from weir.proxy.workers import (
    listening_socket,
    start_workers,
    stop_workers,
    worker_id,
)
from weir.runtime import configure_logging, run_until_signalled
from weir.system_logging import follow_system_logging

log = structlog.get_logger("weir.proxy")

#: A proxy that dies leaves `weir status` this long after its last lease refresh.
PRESENCE_TTL_S = 3.0


#: http_options.keep_alive_timeout_s's default (Ray's too), until the route table says.
DEFAULT_KEEP_ALIVE_S = 5.0


def keep_alive_timeout(http_options: dict[str, Any]) -> float:
    """How long an idle HTTP connection stays open: the cluster's keep_alive_timeout_s. Pure."""
    return float(http_options.get("keep_alive_timeout_s") or DEFAULT_KEEP_ALIVE_S)


class KeepAliveFollower:
    """ASGI wrapper making the HTTP server's keep-alive follow the cluster's http_options.

    The servers read their config's keep-alive when a connection goes idle (hypercorn) or
    opens (uvicorn); the options come later, with the route table, and may change. So each
    request sets the value first: one dict lookup, no task of its own.
    """

    def __init__(self, app: Any, plane: DataPlane, apply: Callable[[float], None]) -> None:
        self.app, self.plane, self.apply = app, plane, apply
        self.current = DEFAULT_KEEP_ALIVE_S

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        table = self.plane.table
        if table is not None:
            wanted = keep_alive_timeout(table.http_options)
            if wanted != self.current:
                self.current = wanted
                self.apply(wanted)
        await self.app(scope, receive, send)


async def serve(opts: argparse.Namespace, stop: asyncio.Event) -> None:
    """Run the proxy (worker `opts.worker_index` of `opts.proxy_workers`) until `stop` is
    set."""
    # Before anything starts a thread: the workers are forked (weir.proxy.workers).
    workers = []
    if opts.worker_index == 0 and opts.proxy_workers > 1:
        workers = await start_workers(opts.argv, opts.proxy_workers)
    proxy_id = worker_id(opts.proxy_id, opts.worker_index, opts.proxy_workers)
    structlog.contextvars.bind_contextvars(proxy_id=proxy_id)
    plane = DataPlane(LeaderLocator(opts.etcd), f"proxy:{proxy_id}")
    plane.start()
    limits = ingress_limits(opts)
    tls = tls_options(opts)
    dashboard = Dashboard(LeaderLocator(opts.etcd))
    admission = Admission(plane, workers=opts.proxy_workers,
                          max_loop_lag_s=opts.max_loop_lag_ms / 1000)
    admission.monitor.start()
    app = HeaderCountLimit(ProxyApp(plane, dashboard), limits.max_headers)
    sock = listening_socket(opts.http_host, opts.http_port, opts.proxy_workers > 1)
    proxy_metrics().follow_queues(lambda: plane.routers)
    tracing.configure("proxy")
    address = f"{opts.http_host}:{opts.http_port}"
    grpc_server = None
    if opts.grpc_port >= 0:
        from weir.proxy.grpc_ingress import start_grpc_ingress

        grpc_server = await start_grpc_ingress(
            plane, opts.http_host, opts.grpc_port,
            admission if admission_enabled() else None)
    store = EtcdStore(opts.etcd)
    info = {"id": proxy_id, "http": address, "pid": os.getpid(),
            "metrics": f"http://{address}/-/metrics",
            "worker": opts.worker_index, "workers": opts.proxy_workers}
    presence = Presence(store, PROXIES_PREFIX + proxy_id, json.dumps(info).encode(),
                        PRESENCE_TTL_S)
    presence.start()
    follow_logging = asyncio.get_running_loop().create_task(
        follow_system_logging(store, "proxy", proxy_id))
    if opts.http_server == "uvicorn":
        import uvicorn

        # `config` is bound before the first request calls this.
        followed = gate(KeepAliveFollower(
            app, plane, lambda s: setattr(config, "timeout_keep_alive", s)), admission)
        config = uvicorn.Config(followed, host=opts.http_host, port=opts.http_port,
                                log_level="warning", lifespan="off", access_log=False,
                                timeout_keep_alive=int(DEFAULT_KEEP_ALIVE_S),
                                ssl_certfile=tls.certfile or None,
                                ssl_keyfile=tls.keyfile or None,
                                ssl_keyfile_password=tls.keyfile_password or None,
                                ssl_ca_certs=tls.ca_certs or None,
                                **limits.uvicorn_settings(protocol_admission(admission)))
        server = uvicorn.Server(config)
        server_task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        await _announce(opts, address)
        await stop.wait()
        server.should_exit = True
        await server_task
    else:
        from hypercorn.asyncio import serve as hypercorn_serve
        from hypercorn.config import Config

        hconfig = Config()
        # hypercorn makes a socket of its own from the fd, and closes it.
        hconfig.bind = [f"fd://{sock.detach()}"]
        hconfig.accesslog = None
        hconfig.keep_alive_timeout = DEFAULT_KEEP_ALIVE_S
        hconfig.graceful_timeout = 2
        for name, value in limits.hypercorn_settings().items():
            setattr(hconfig, name, value)
        if tls.enabled:
            hconfig.certfile, hconfig.keyfile = tls.certfile, tls.keyfile
            hconfig.keyfile_password = tls.keyfile_password or None
            hconfig.ca_certs = tls.ca_certs or None
        gated = gate(KeepAliveFollower(
            app, plane, lambda s: setattr(hconfig, "keep_alive_timeout", s)), admission)
        with admission_in_protocol(protocol_admission(admission)):
            server_task = asyncio.get_running_loop().create_task(
                hypercorn_serve(gated, hconfig,  # type: ignore[arg-type]
                                shutdown_trigger=stop.wait))
            await _announce(opts, address)
            await server_task
    follow_logging.cancel()
    admission.monitor.stop()
    sock.close()
    await stop_workers(workers)
    await presence.withdraw()
    if grpc_server is not None:
        await grpc_server.stop(1)
    await plane.close()
    for closing in (dashboard.locator, store):
        try:
            await closing.close()
        except StoreError:
            pass
    log.info("proxy stopped")


#: WEIR_PROXY_ADMISSION=off: no admission before the app (the data plane still sheds);
#: =gate: in the ASGI gate only, not in the HTTP server's protocol. For benchmarks to compare
#: in one run (bench/overload.py --admission).
ADMISSION_ENV = "WEIR_PROXY_ADMISSION"


#: --max-loop-lag-ms's default when set: `weir start` runs the proxy without the flag.
MAX_LOOP_LAG_ENV = "WEIR_PROXY_MAX_LOOP_LAG_MS"


def admission_enabled() -> bool:
    """Whether requests pass admission before the app (WEIR_PROXY_ADMISSION is not off)."""
    return os.environ.get(ADMISSION_ENV, "on") != "off"


def protocol_admission(admission: Admission) -> Admission | None:
    """`admission`, if the HTTP server's protocol is to apply it (WEIR_PROXY_ADMISSION is
    on), else None."""
    return admission if os.environ.get(ADMISSION_ENV, "on") == "on" else None


def gate(app: Any, admission: Admission) -> Any:
    """`app` behind the admission gate, unless admission is off."""
    return AdmissionGate(app, admission) if admission_enabled() else app


def ingress_limits(opts: argparse.Namespace) -> IngressLimits:
    """The limits the proxy's flags set."""
    return IngressLimits(max_header_bytes=opts.max_header_bytes, max_headers=opts.max_headers,
                         header_timeout_s=opts.header_timeout_s,
                         max_connections=opts.max_connections)


def tls_options(opts: argparse.Namespace) -> TlsFiles:
    """The TLS files the proxy's flags name (all empty: plain HTTP)."""
    return TlsFiles(certfile=opts.ssl_certfile, keyfile=opts.ssl_keyfile,
                    keyfile_password=opts.ssl_keyfile_password, ca_certs=opts.ssl_ca_certs)


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of `IngressLimits` and of HTTPS (Ray's http_options names)."""
    parser.add_argument("--ssl-certfile", default="")
    parser.add_argument("--ssl-keyfile", default="")
    parser.add_argument("--ssl-keyfile-password", default=os.environ.get(PASSWORD_ENV, ""),
                        help=f"The key's password (default: ${PASSWORD_ENV}).")
    parser.add_argument("--ssl-ca-certs", default="")
    parser.add_argument("--max-header-bytes", type=int, default=DEFAULT_MAX_HEADER_BYTES)
    parser.add_argument("--max-headers", type=int, default=DEFAULT_MAX_HEADERS)
    parser.add_argument("--header-timeout-s", type=float, default=DEFAULT_HEADER_TIMEOUT_S,
                        help="Close a connection whose request headers take longer (uvicorn; "
                             "on hypercorn its keep-alive timeout bounds them).")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                        help="Answer 503 past this many connections (uvicorn only; 0: none).")


async def _announce(opts: argparse.Namespace, address: str) -> None:
    scheme = "https" if tls_options(opts).enabled else "http"
    log.info("proxy serving", http=address, scheme=scheme)
    if opts.ready_file:
        await asyncio.to_thread(Path(opts.ready_file).write_text, address)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m weir.proxy`."""
    parser = argparse.ArgumentParser(prog="python -m weir.proxy")
    parser.add_argument("--etcd", required=True)
    parser.add_argument("--http-host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--http-server", choices=HTTP_SERVER_CHOICES, default="auto",
                        help="auto: uvicorn if installed, else hypercorn.")
    parser.add_argument("--grpc-port", type=int, default=-1,
                        help="Serve the gRPC ingress on this port (-1: off).")
    parser.add_argument("--proxy-id", default="")
    parser.add_argument("--ready-file", default="")
    parser.add_argument("--proxy-workers", type=int, default=1,
                        help="Proxy processes sharing the HTTP and gRPC ports (SO_REUSEPORT); "
                             "each admits ceil(max_queued_requests / N) queued requests.")
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--max-loop-lag-ms", type=float,
                        default=float(os.environ.get(MAX_LOOP_LAG_ENV)
                                      or DEFAULT_MAX_LOOP_LAG_S * 1000),
                        help="Shed (503) a request for a deployment with a bounded queue "
                             f"that arrives while the event loop is this far behind "
                             f"(default: ${MAX_LOOP_LAG_ENV}, else "
                             f"{DEFAULT_MAX_LOOP_LAG_S * 1000:.0f}).")
    add_limit_flags(parser)
    opts = parser.parse_args(argv)
    if opts.proxy_workers < 1:
        raise SystemExit(f"weir proxy: --proxy-workers must be 1 or more; got "
                         f"{opts.proxy_workers}")
    opts.argv = list(sys.argv[1:] if argv is None else argv)
    if not opts.proxy_id:  # one id for all the workers, each adding its index
        opts.proxy_id = uuid.uuid4().hex[:8]
        opts.argv += ["--proxy-id", opts.proxy_id]
    try:
        opts.http_server = resolve_http_server(opts.http_server)
    except HttpServerMissing as exc:
        raise SystemExit(f"weir proxy: {exc}") from None
    # Reconfigurable: it follows the cluster's logging_config (weir.system_logging).
    configure_logging("proxy", reconfigurable=True)
    try:
        # Checked here so that a bad file is one line naming it, not a traceback from ssl.
        if tls_options(opts).enabled:
            server_context(tls_options(opts))
    except TlsError as exc:
        log.error("cannot serve HTTPS", error=str(exc))
        raise SystemExit(f"weir proxy: {exc}") from None
    auth.pin_token()
    run_until_signalled(lambda stop: serve(opts, stop))
