"""The status page at `/-/dashboard`: read-only, served by every proxy, refreshing itself.

Why on the proxy: it is the one Weir server an operator's browser can already reach (the
admin API speaks gRPC). The page is static (`proxy/static/`: HTML, one small vanilla JS
file, CSS; package data, no CDN, since clusters often have no internet) and polls
`/-/api/status`, a JSON document the proxy builds from the leader's admin API: statuses,
replicas, recent events and config history. The proxy asks the leader at most once per
CACHE_S whatever the number of open pages, and never on the event loop (the admin client
is synchronous).

With a cluster token set (weir.auth), `/-/api/status` wants it as `Authorization: Bearer
TOKEN`; the page asks for it once and keeps it for the browser tab. The static files hold
no data and are served to anyone.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any

import structlog

from weir import auth
from weir.cli.admin_client import AdminClient
from weir.dataplane.route_table import LeaderLocator
from weir.exceptions import ClusterError

log = structlog.get_logger("weir.proxy")

PAGE_PATH = "/-/dashboard"
API_PATH = "/-/api/status"
#: How long one snapshot of the cluster serves every page that asks.
CACHE_S = 1.0
#: How many events and accepted configs the page shows.
EVENTS_SHOWN = 50
HISTORY_SHOWN = 10
STATIC_FILES = {"dashboard.html": b"text/html; charset=utf-8",
                "dashboard.js": b"text/javascript; charset=utf-8",
                "dashboard.css": b"text/css; charset=utf-8"}


def dashboard_document(status: Mapping[str, Any], replicas: Sequence[Mapping[str, Any]],
                       events: Sequence[Mapping[str, Any]],
                       history: Sequence[Mapping[str, Any]], now: float) -> dict[str, Any]:
    """What `/-/api/status` answers, from the admin API's answers. Pure.

    Replicas are grouped under their deployments; events and configs come newest first."""
    by_deployment: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in replicas:
        by_deployment.setdefault((r["app"], r["deployment"]), []).append({
            "replica_id": r["replica_id"], "node_id": r.get("node_id", ""),
            "state": r.get("state", ""), "queue_depth": r.get("ongoing", 0),
            "pid": r.get("pid", 0), "version": r.get("version", "")})
    applications = []
    for name, app in sorted(status.get("applications", {}).items()):
        app_status = app.get("app_status", {})
        applications.append({
            "name": name, "status": app_status.get("status", ""),
            "message": app_status.get("message", ""),
            "deployment_timestamp": app_status.get("deployment_timestamp", 0),
            "route_prefix": app.get("route_prefix"),
            "deployments": [{
                "name": d["name"], "status": d.get("status", ""),
                "message": d.get("message", ""),
                "replica_states": d.get("replica_states", {}),
                "replicas": sorted(by_deployment.get((name, d["name"]), []),
                                   key=lambda r: r["replica_id"]),
            } for d in app.get("deployment_statuses", [])],
        })
    configs = [{"revision": h.get("revision", ""), "timestamp": h.get("timestamp", 0),
                "applications": [a.get("name", "default")
                                 for a in h.get("config", {}).get("applications", [])]}
               for h in history[-HISTORY_SHOWN:]]
    return {
        "generated_at": now,
        "applications": applications,
        "controllers": list(status.get("controllers", [])),
        "proxies": list(status.get("proxies", [])),
        "events": list(reversed(events[-EVENTS_SHOWN:])),
        "config_history": list(reversed(configs)),
    }


def authorized(headers: Sequence[tuple[bytes, bytes]], token: str) -> bool:
    """Whether a request may read the cluster's status: no token set, or it carries it as a
    bearer token. Pure (and constant-time in the token)."""
    if not token:
        return True
    for name, value in headers:
        if name == b"authorization":
            given = value.decode("latin-1").removeprefix("Bearer ").strip()
            return hmac.compare_digest(given.encode(), token.encode())
    return False


def _static(name: str) -> bytes:
    return (resources.files("weir.proxy") / "static" / name).read_bytes()


class Dashboard:
    """The ASGI handler of PAGE_PATH (and its files) and API_PATH."""

    def __init__(self, locator: LeaderLocator, token: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.locator = locator
        self.token = auth.cluster_token(token)
        self.clock = clock
        self._files = {name: _static(name) for name in STATIC_FILES}
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    @staticmethod
    def handles(path: str) -> bool:
        """Whether `path` is the page's or its API's."""
        return path == API_PATH or path == PAGE_PATH or path.startswith(PAGE_PATH + "/")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path: str = scope["path"]
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            await _send(send, 405, b"the status page is read-only", b"text/plain")
            return
        if path == API_PATH:
            if not authorized(scope["headers"], self.token):
                await _send(send, 401, b'{"error": "this cluster needs its token"}',
                            b"application/json")
                return
            try:
                doc = await self.snapshot()
            except ClusterError as exc:
                await _send(send, 503, json.dumps({"error": str(exc)}).encode(),
                            b"application/json")
                return
            await _send(send, 200, json.dumps(doc).encode(), b"application/json")
            return
        name = path.removeprefix(PAGE_PATH).strip("/") or "dashboard.html"
        if name not in STATIC_FILES:
            await _send(send, 404, b"no such file", b"text/plain")
            return
        await _send(send, 200, self._files[name], STATIC_FILES[name])

    async def snapshot(self) -> dict[str, Any]:
        """The cluster now (at most CACHE_S old); ClusterError if the leader cannot answer."""
        async with self._lock:
            if self._cached is not None and self.clock() - self._cached[0] < CACHE_S:
                return self._cached[1]
            address = await self.locator.leader_address()
            if not address:
                raise ClusterError("the cluster has no leader right now")
            doc = await asyncio.to_thread(self._ask, address)
            self._cached = (self.clock(), doc)
            return doc

    def _ask(self, address: str) -> dict[str, Any]:
        client = AdminClient(address, token=self.token, timeout=5, leader_wait_s=2)
        return dashboard_document(client.get_status(), client.list_replicas(),
                                  client.get_events(EVENTS_SHOWN),
                                  client.get_config(history=True,
                                                    history_limit=HISTORY_SHOWN),
                                  time.time())


async def _send(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
