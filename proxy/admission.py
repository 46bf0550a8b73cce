"""Admission before the ASGI app: shed a request where the HTTP server has just parsed it.

Under overload the proxy's event loop is the queue nobody bounds: requests wait there, in
tasks and socket buffers, before the data plane's bounded queue can count them, and every
one of them (even the ones it will shed) costs a task and a trip through the app. So the
proxy decides first, from plain data, and a request it sheds costs a parse and one write:
- the deployment's load as this worker sees it: the requests it admitted and has not
  answered yet (`pending`), bounded by the replicas' room (max_ongoing_requests x replicas)
  plus this worker's share of max_queued_requests, and the data plane's own verdict
  (`DeploymentRouter.would_shed`);
- the event loop's lag: a request that arrives while the loop is behind by more than
  `max_loop_lag_s` and would queue (the replicas' room is taken) would wait behind the loop
  again and again; it is shed at once (only for deployments with a bounded queue: -1
  means never shed, as in Ray).

With `--proxy-workers N`, each worker is a caller of its own: it admits ceil(max_queued/N)
queued requests, so the workers together queue about max_queued_requests, not N times it.

Where the check runs: on uvicorn in `weir.proxy.ingress_limits.GuardedProtocol`, before the
request's task exists; on hypercorn's HTTP/1.1 in `weir.proxy.hypercorn_admission`, as its
protocol has parsed the request; elsewhere (hypercorn's HTTP/2, uvicorn on h11) in
`AdmissionGate`, the first ASGI wrapper. `AdmissionGate` also keeps `pending` exact on all
of them: it counts a request out when its app call ends. The gRPC ingress
(`weir.proxy.grpc_ingress`) asks `Admission.refusal` once it has routed a call, before it
builds anything for it, and counts the calls it admits in the same `pending`: HTTP and
gRPC calls of one worker share its routers and the replicas' room.
"""

from __future__ import annotations

import asyncio
import enum
import math
from dataclasses import dataclass
from typing import Any

from weir.dataplane.caller import DataPlane
from weir.dataplane.route_table import match_route
from weir.metrics import proxy_metrics
from weir.proxy.http_app import under_root

#: Shed a request arriving while the event loop is behind by more than this (seconds).
DEFAULT_MAX_LOOP_LAG_S = 0.05
#: How often the loop's lag is sampled.
LAG_SAMPLE_S = 0.01
#: The scope key under which the protocol leaves the deployment it admitted a request to
#: (None: checked, no deployment's route).
ADMITTED_KEY = "weir.admitted"


class Verdict(enum.Enum):
    """What admission decides for one request."""

    ADMIT = "admit"
    QUEUE_FULL = "queue_full"
    LOOP_LATE = "loop_late"


@dataclass(frozen=True)
class DeploymentLoad:
    """One deployment's load as one proxy worker sees it. Plain data."""

    #: Requests this worker admitted and has not answered yet.
    pending: int
    #: max_ongoing_requests x running replicas.
    capacity: int
    #: This worker's share of max_queued_requests (-1: unbounded).
    queue_share: int
    #: Requests waiting in the data plane's queue for this deployment.
    queued: int
    #: The data plane's own verdict (`DeploymentRouter.would_shed`).
    router_sheds: bool


def queue_share(max_queued: int, workers: int) -> int:
    """One worker's share of a deployment's max_queued_requests: ceil(max_queued/workers),
    -1 (unbounded) stays -1. Pure."""
    if max_queued < 0:
        return -1
    return math.ceil(max_queued / max(1, workers))


def decide(load: DeploymentLoad, loop_lag_s: float, max_loop_lag_s: float) -> Verdict:
    """Admit or shed one request for a deployment under `load`, with the event loop
    `loop_lag_s` behind. Pure."""
    if load.queue_share < 0:
        return Verdict.ADMIT  # Ray: max_queued_requests=-1 never sheds
    if load.router_sheds or load.pending >= load.capacity + load.queue_share:
        return Verdict.QUEUE_FULL
    if load.queued and load.queued >= load.queue_share:
        return Verdict.QUEUE_FULL
    # Only a request that would wait (the replicas' room is taken) waits behind a late loop
    # in its queue; one with room goes at once (and a machine short of CPU makes the loop
    # late under light load too: that must not shed).
    if loop_lag_s > max_loop_lag_s and load.pending >= load.capacity:
        return Verdict.LOOP_LATE
    return Verdict.ADMIT


def loop_lag(now: float, due: float, last_lateness: float) -> float:
    """How far behind the loop is: the last sample's lateness, or more if the next sample
    is already overdue at `now` (a loop stuck in one long iteration shows it before the
    sample runs). Pure."""
    return max(last_lateness, now - due)


class LoopLagMonitor:
    """Samples the event loop's lag: a timer every LAG_SAMPLE_S and how late it fires."""

    def __init__(self, interval_s: float = LAG_SAMPLE_S) -> None:
        self.interval_s = interval_s
        self.lateness = 0.0
        self._due = float("inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start sampling on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._schedule()

    def stop(self) -> None:
        """Stop sampling."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def lag(self) -> float:
        """The loop's lag now, seconds (0 before `start`)."""
        if self._loop is None:
            return 0.0
        return loop_lag(self._loop.time(), self._due, self.lateness)

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self.interval_s
        self._timer = self._loop.call_at(self._due, self._sample)

    def _sample(self) -> None:
        assert self._loop is not None
        self.lateness = max(0.0, self._loop.time() - self._due)
        self._schedule()


def shed_text(verdict: Verdict, load: DeploymentLoad, loop_lag_s: float,
              max_loop_lag_s: float) -> str:
    """The 503's body: the data plane's BackPressureError text for a full queue, the same
    opening for a late loop (clients that match it keep working)."""
    if verdict is Verdict.QUEUE_FULL:
        return (f"Request dropped due to backpressure (num_queued_requests={load.queued}, "
                f"max_queued_requests={load.queue_share}).")
    return (f"Request dropped due to backpressure (the proxy is {loop_lag_s * 1000:.0f} ms "
            f"behind; it sheds past {max_loop_lag_s * 1000:.0f} ms).")


def shed_headers(length: int, keep_alive: bool) -> list[tuple[bytes, bytes]]:
    """The headers of a 503 written by a server's protocol, for a `length`-byte body: the
    app's shed answer's (no `server` or `date`: a 5xx may go without, and they cost). Pure."""
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", b"%d" % length), (b"retry-after", b"1")]
    if not keep_alive:
        headers.append((b"connection", b"close"))
    return headers


def shed_response(text: str, keep_alive: bool) -> bytes:
    """A whole HTTP/1.1 503 with the headers the app's shed answer has. Pure."""
    body = text.encode()
    head = b"".join(b"%s: %s\r\n" % pair for pair in shed_headers(len(body), keep_alive))
    return b"HTTP/1.1 503 Service Unavailable\r\n" + head + b"\r\n" + body


class Admission:
    """The proxy worker's admission: looks a request's deployment up in the route table
    and applies `decide` to what the data plane and this worker count."""

    def __init__(self, plane: DataPlane, *, workers: int = 1,
                 max_loop_lag_s: float = DEFAULT_MAX_LOOP_LAG_S,
                 monitor: LoopLagMonitor | None = None) -> None:
        self.plane = plane
        self.workers = max(1, workers)
        self.max_loop_lag_s = max_loop_lag_s
        self.monitor = monitor or LoopLagMonitor()
        self.pending: dict[tuple[str, str], int] = {}

    def check(self, path: str, method: str) -> tuple[tuple[str, str] | None, str]:
        """For a `method` request to `path`: the deployment it is admitted to (None: no deployment
        route, the app answers it) and "", or None and the 503's text if it is shed."""
        table = self.plane.table
        if table is None:
            return None, ""
        local = under_root(path, str(table.http_options.get("root_path") or ""))
        route = match_route(table.routes, local) if local is not None else None
        if route is None:
            return None, ""
        key = (route.app, route.deployment)
        refusal = self.refusal(key)
        if not refusal:
            return key, ""
        # Counted as the app counts its own sheds.
        metrics = proxy_metrics()
        metrics.shed(route.app, route.deployment, "http").inc()
        metrics.http(route.app, route.deployment, route.route_prefix, method, 503, 0.0)
        return None, refusal

    def refusal(self, key: tuple[str, str]) -> str:
        """Why a new request to deployment `key` (app, deployment) is shed now, or "" if it
        is admitted (also when the data plane knows nothing of it yet: it decides then)."""
        table = self.plane.table
        targets = table.deployments.get(key) if table is not None else None
        router = self.plane.routers.get(key)
        if targets is None or router is None or targets.max_queued_requests < 0:
            return ""  # -1: never shed (Ray's rule), whatever the load
        load = DeploymentLoad(
            pending=self.pending.get(key, 0),
            capacity=max(1, targets.max_ongoing_requests) * len(targets.replicas),
            queue_share=queue_share(targets.max_queued_requests, self.workers),
            queued=router.num_queued, router_sheds=router.would_shed())
        lag = self.monitor.lag()
        verdict = decide(load, lag, self.max_loop_lag_s)
        if verdict is Verdict.ADMIT:
            return ""
        return shed_text(verdict, load, lag, self.max_loop_lag_s)

    def enter(self, key: tuple[str, str]) -> None:
        """Count a request admitted to `key` in."""
        self.pending[key] = self.pending.get(key, 0) + 1

    def leave(self, key: tuple[str, str]) -> None:
        """Count a request admitted to `key` out (its app call ended)."""
        left = self.pending.get(key, 0) - 1
        if left > 0:
            self.pending[key] = left
        else:
            self.pending.pop(key, None)


def admit_in_scope(admission: Admission, scope: dict[str, Any],
                   key: tuple[str, str] | None) -> None:
    """Mark a request admitted to `key` (None: no deployment's route) in its ASGI scope and
    count it in, unless that is done already: the protocol that admitted it and the gate
    may each come first (a server may start the request's task at once)."""
    if ADMITTED_KEY in scope:
        return
    scope[ADMITTED_KEY] = key
    if key is not None:
        admission.enter(key)


async def answer_text(send: Any, status: int, text: str, header: tuple[bytes, bytes]) -> None:
    """Answer an ASGI request `status` with a plain-text body and one more `header`."""
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), header]})
    await send({"type": "http.response.body", "body": body})


class AdmissionGate:
    """The first ASGI wrapper: admits the requests no protocol checked (hypercorn; uvicorn
    without httptools), answers the shed ones 503 at once, and counts each admitted request
    out when its app call ends."""

    def __init__(self, app: Any, admission: Admission) -> None:
        self.app, self.admission = app, admission

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if ADMITTED_KEY not in scope:
            key, refusal = self.admission.check(scope["path"], scope["method"])
            if refusal:
                await answer_text(send, 503, refusal, (b"retry-after", b"1"))
                return
            admit_in_scope(self.admission, scope, key)
        key = scope[ADMITTED_KEY]
        if key is None:
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.leave(key)
