"""The HTTP ingress: a plain ASGI app, so the server under it (hypercorn, uvicorn) is a setting.

It only moves bytes: match the route prefix, hand the request to the router as soon as the
body's first chunk is in, pass the rest of the body on as it arrives, and play the
replica's reply back. It never unpickles anything.
Status codes of its own: 404 no route, 413 body too large, 503 shed or no replica (with
Retry-After), 408 past request_timeout_s, 502 the replica died mid-call.

The body limit (http_options.max_request_body_bytes) is checked twice: on Content-Length
before reading anything, and on a chunked body as it arrives (413, and the call already
sent to the replica is cancelled). A body that came whole in the server's first message
(every bodiless request; uvicorn's small bodies) is one message to the replica, as before,
with no task beyond the disconnect watcher (the call runs in the request's task).
Otherwise the call starts with what is in and a reader task feeds the rest to it
(`weir.dataplane.request_body`), on a gRPC call of its own (see
`weir.dataplane.transport`), so that a handler's `request.stream()` sees each chunk as the
client sends it.

The cluster's HTTP middlewares (`proxy.middleware_stack`) wrap all of this, health and
route listing included, as in Ray Serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import structlog

from weir import tracing
from weir.dataplane.caller import DataPlane
from weir.dataplane.request_body import RequestBody
from weir.dataplane.request_id import new_request_id
from weir.dataplane.route_table import RouteEntry, match_route
from weir.dataplane.transport import ReplicaCallFailed
from weir.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    RequestTimeoutError,
)
from weir.metrics import CLIENT_CLOSED, exposition, proxy_metrics
from weir.protos import weir_pb2 as pb
from weir.proxy.dashboard import Dashboard
from weir.proxy.middleware_stack import MiddlewareStack
from weir.proxy.websocket_proxy import relay_websocket

log = structlog.get_logger("weir.proxy")

Scope = dict[str, Any]
Message = dict[str, Any]

DEFAULT_MAX_BODY = 100 * 1024 * 1024
CALL_METHOD_HEADER = b"x-serve-call-method"
#: How long the proxy keeps reading a body its handler no longer wants (it answered
#: early) before it gives up on the client and closes the connection.
DRAIN_TIMEOUT_S = 30.0
#: Ray's request id header: kept from the client, else made; echoed on the response.
REQUEST_ID_HEADER = b"x-request-id"


class BodyTooLarge(Exception):
    """The request body passed max_request_body_bytes."""


async def _respond(send: Any, status: int, text: str,
                   extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(body)).encode()), *(extra_headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length a request declares (None: absent or unreadable, e.g. chunked)."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def first_chunk(receive: Any, limit: int) -> tuple[bytes, bool]:
    """The body's first chunk and whether more follows; BodyTooLarge past `limit` bytes."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise asyncio.CancelledError("client disconnected")
    chunk: bytes = message.get("body", b"")
    if len(chunk) > limit:
        raise BodyTooLarge
    return chunk, bool(message.get("more_body", False))


async def read_rest(receive: Any, body: RequestBody, size: int, limit: int) -> Message:
    """Pass the rest of the body to `body` as it arrives (BodyTooLarge as soon as it passes
    `limit` bytes: the chunk that passes it is dropped), then wait for the client's next
    message (a disconnect) and return it. A disconnect mid-body is returned at once."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return message
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        more = message.get("more_body", False)
        body.add(chunk, last=not more)
        if not more:
            return await receive()  # type: ignore[no-any-return]


async def _too_large(send: Any, limit: int,
                     extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    # The rest of the body stays unread: close the connection rather than drain it.
    await _respond(send, 413, f"request body larger than {limit} bytes "
                              "(http_options.max_request_body_bytes)",
                   [(b"connection", b"close"), *(extra_headers or [])])


def _server_error(status: int) -> bool:
    return status >= 500
def under_root(path: str, root_path: str) -> str | None:
    """`path` seen from the cluster's `http_options.root_path` (the part routes match), or
    None when the request is not under it. Pure."""
    if not root_path:
        return path
    if path == root_path:
        return "/"
    if path.startswith(root_path + "/"):
        return path[len(root_path):]
    return None


def with_request_id(headers: list[tuple[bytes, bytes]],
                    request_id: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """The response's headers with the request id header added, unless the replica's app
    set its own X-Request-ID (Ray's rule). Pure."""
    for name, _ in headers:
        if name.lower() == REQUEST_ID_HEADER:
            return headers
    headers.append(request_id)
    return headers


async def _drain(body: RequestBody, watcher: asyncio.Future[Message]) -> None:
    """The handler answered before the body ended: keep reading it (up to the body limit,
    `watcher` enforces it) and drop it. Closing the connection instead would break the
    pipe of a client still writing (urllib sends the whole body before it reads)."""
    body.discard()
    ended = asyncio.ensure_future(body.ended.wait())
    try:
        waiting: set[asyncio.Future[Any]] = {watcher, ended}
        await asyncio.wait(waiting, timeout=DRAIN_TIMEOUT_S,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended.cancel()
    if watcher.done() and not watcher.cancelled() and watcher.exception() is not None:
        log.info("request body too large after the answer; connection closed")


class ProxyApp:
    """The proxy's ASGI application."""

    def __init__(self, plane: DataPlane, dashboard: Dashboard | None = None) -> None:
        self.plane = plane
        #: The status page (`weir.proxy.dashboard`), if this proxy serves it.
        self.dashboard = dashboard
        self.middlewares = MiddlewareStack(self._serve)
        self.metrics = proxy_metrics()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            # The server's own events: middlewares come and go with the route table later.
            await self._lifespan(receive, send)
            return
        table = self.plane.table
        app = await self.middlewares.current(table.http_options if table else None)
        if app is None:
            if scope["type"] == "http":
                await _respond(send, 503, "the proxy cannot load the configured HTTP "
                                          f"middlewares: {self.middlewares.error}")
            return
        await app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Any, send: Any) -> None:
        """The proxy's own app, inside the middlewares."""
        if scope["type"] == "websocket":
            root = self._root_path()
            local = under_root(scope["path"], root)
            if local is None:
                await send({"type": "websocket.close", "code": 1000})
                return
            # The relay routes by the path under root_path; the app sees root_path in front
            # of its route prefix and the whole path, as over HTTP.
            await relay_websocket(self.plane, {**scope, "root_path": root}, receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/-/healthz":
            ready = self.plane.table is not None
            await _respond(send, 200 if ready else 503,
                           "success" if ready else "no route table yet")
            return
        if path == "/-/routes":
            table = self.plane.table
            routes = {r.route_prefix: r.app for r in table.routes} if table else {}
            await _respond(send, 200, json.dumps(routes),
                           [(b"content-type", b"application/json")])
            return
        if path == "/-/metrics":
            body, content_type = exposition()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", content_type.encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        if self.dashboard is not None and self.dashboard.handles(path):
            await self.dashboard(scope, receive, send)
            return
        self.metrics.ongoing_http += 1
        try:
            await self._forward(scope, receive, send)
        finally:
            self.metrics.ongoing_http -= 1

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _root_path(self) -> str:
        table = self.plane.table
        return str(table.http_options.get("root_path") or "") if table else ""

    async def _forward(self, scope: Scope, receive: Any, send: Any) -> None:
        table = self.plane.table
        path = scope["path"]
        # Ray's http_options.root_path: every route lives under it, and the app sees it as
        # the start of its ASGI root_path (FastAPI's docs and openapi URLs follow it).
        root = self._root_path()
        local = under_root(path, root)
        route = match_route(table.routes, local) if table and local is not None else None
        if route is None:
            self.metrics.http("", "", "", scope["method"], 404, 0.0)
            await _respond(send, 404, f"Path '{path}' not found. "
                                      "Ping http://.../-/routes for available routes.")
            return
        router = self.plane.routers.get((route.app, route.deployment))
        if router is not None and router.would_shed():
            # Overloaded: refuse before reading the body or building anything for the call,
            # so that shedding costs the proxy as little as possible.
            shed = BackPressureError(num_queued_requests=router.num_queued,
                                     max_queued_requests=router.max_queued)
            self.metrics.shed(route.app, route.deployment, "http").inc()
            self.metrics.http(route.app, route.deployment, route.route_prefix, scope["method"],
                              503, 0.0)
            await _respond(send, 503, str(shed), [(b"retry-after", b"1")])
            return
        options = table.http_options if table else {}
        limit = int(options.get("max_request_body_bytes") or DEFAULT_MAX_BODY)
        declared = declared_length(scope["headers"])
        try:
            if declared is not None and declared > limit:
                raise BodyTooLarge
            chunk, more = await first_chunk(receive, limit)
        except BodyTooLarge:
            self.metrics.http(route.app, route.deployment, route.route_prefix, scope["method"],
                              413, 0.0)
            await _too_large(send, limit)
            return
        client = scope.get("client") or ("", 0)
        # Built once, in place: the headers go straight into the message, never through
        # objects of their own that would be copied into it.
        request = pb.CallRequest(caller="proxy")
        http = request.http
        http.SetInParent()
        http.method = scope["method"]
        http.path = path
        http.query_string = scope.get("query_string", b"")
        http.body = chunk
        http.scheme = scope.get("scheme", "http")
        http.root_path = root + (route.route_prefix if route.route_prefix != "/" else "")
        http.client_host = client[0] or ""
        http.client_port = client[1] or 0
        http.http_version = scope.get("http_version", "1.1")
        add_header = http.headers.add
        request_id = traceparent = ""
        for name, value in scope["headers"]:
            if name == CALL_METHOD_HEADER:
                try:
                    request.method = value.decode()
                except UnicodeDecodeError:  # found by fuzzing: was an uncaught error
                    await _respond(send, 400, "the x-serve-call-method header must name a "
                                              "method of the deployment, in UTF-8")
                    return
            elif name == REQUEST_ID_HEADER:
                request_id = value.decode("latin-1")
            elif name == tracing.TRACEPARENT_HEADER:
                traceparent = value.decode("latin-1")
            add_header(name=name, value=value)
        # The client's X-Request-ID is kept (Ray's rule), so that its logs and ours meet;
        # else 32 random hex digits (`weir.dataplane.request_id`).
        request_id = request_id or new_request_id()
        request.request_id = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        tracing.enter(traceparent, "weir.proxy")
        timeout = options.get("request_timeout_s")
        deadline = time.monotonic() + float(timeout) if timeout else None
        body = RequestBody(request.http, chunk) if more else None
        # The watcher is scheduled before the call: chunks the server already holds (a small
        # body's end, say) are folded into the call's first message before it is sealed.
        watcher = asyncio.ensure_future(
            receive() if body is None else read_rest(receive, body, len(chunk), limit))
        await self._relay_while_connected(route, request, deadline, body, watcher, send, limit)

    async def _relay_while_connected(self, route: RouteEntry, request: pb.CallRequest,
                                     deadline: float | None, body: RequestBody | None,
                                     watcher: asyncio.Future[Message], send: Any,
                                     limit: int) -> None:
        """Relay the call while `watcher` waits on the client: a whole body's next message
        (a disconnect), or the rest of a body still arriving (`read_rest`). A client gone,
        or a body past `limit`, cancels the call.

        The call runs in this task, not one of its own: the watcher's end cancels this task
        (`stopped` says why), which costs nothing while the client stays, where a task and
        an `asyncio.wait` per request cost the proxy a few percent of its CPU."""
        task = asyncio.current_task()
        assert task is not None
        request_id = (REQUEST_ID_HEADER, request.request_id.encode("latin-1"))
        stopped: list[str] = []
        finished = False

        def on_client(done: asyncio.Future[Message]) -> None:
            # Scheduled by the loop, so it may run after the call ended: `finished` guards
            # the task from a cancel meant for a call that is over.
            if finished or done.cancelled():
                return
            error = done.exception()
            if isinstance(error, BodyTooLarge):
                stopped.append("too large")
            elif error is not None or done.result()["type"] == "http.disconnect":
                stopped.append("disconnected")  # or the server failed to read from it
            else:
                return
            task.cancel()

        watcher.add_done_callback(on_client)
        responded = False
        relay_send = send
        if body is not None:
            # Only a body still arriving needs a wrapper on `send` (most requests have none).
            streaming_body = body

            async def relay_send(message: Message) -> None:
                nonlocal responded
                responded = True
                if (message["type"] == "http.response.body"
                        and not message.get("more_body", False)
                        and not streaming_body.ended.is_set()):
                    # The handler answered before the body ended: the server closes a
                    # connection whose request is unfinished once the response ends, so
                    # take the rest of the body in before ending it.
                    await _drain(streaming_body, watcher)
                await send(message)

        try:
            if body is not None:
                # One loop turn first: the watcher takes in the chunks the server already
                # holds (a small body's end), so they go in the call's first message.
                await asyncio.sleep(0)
            await self._relay(route.app, route.deployment, request, deadline, relay_send,
                              request_id, body)
        except asyncio.CancelledError:
            if not stopped or task.uncancel() > 0:
                raise  # cancelled from outside (the server stopping), not by the client
            if stopped[0] == "disconnected":
                log.info("client disconnected; request cancelled",
                         request_id=request.request_id)
            else:
                log.info("request body too large; request cancelled",
                         request_id=request.request_id)
                if not responded:
                    await _too_large(send, limit, [request_id])
        finally:
            finished = True
            watcher.cancel()

    async def _relay(self, app: str, deployment: str, request: pb.CallRequest,
                     deadline: float | None, send: Any, request_id: tuple[bytes, bytes],
                     body: RequestBody | None = None) -> None:
        """Play the replica's reply back to the client; the proxy's own answers (503, 408,
        502) when there is none. Every response carries the request id."""
        echo = [request_id]
        started = False
        status, started_at = CLIENT_CLOSED, time.perf_counter()
        try:
            replies = self.plane.stream(app, deployment, request, deadline, body)
            async with contextlib.aclosing(replies):
                async for reply in replies:
                    if not started:
                        started = True
                        if reply.outcome == pb.USER_ERROR and not reply.status:
                            status = 500
                            await _respond(send, 500, f"{reply.error_type}: {reply.error}",
                                           echo)
                            return
                        status = reply.status or 200
                        await send({"type": "http.response.start",
                                    "status": reply.status or 200,
                                    "headers": with_request_id(
                                        [(h.name, h.value) for h in reply.headers],
                                        request_id)})
                    # The replica's last body message says so: the response ends with it
                    # (one ASGI message, one write to the socket, fewer than an empty end).
                    ended = not reply.more_body
                    await send({"type": "http.response.body", "body": reply.body,
                                "more_body": not ended})
                    if ended:
                        return
            if started:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                status = 502
                await _respond(send, 502, "the replica closed the call without a reply", echo)
        except BackPressureError as exc:
            status = 503
            self.metrics.shed(app, deployment, "http").inc()
            log.warning("request shed", request_id=request.request_id, reason=str(exc))
            await _respond(send, 503, str(exc), [(b"retry-after", b"1"), request_id])
        except DeploymentUnavailableError as exc:
            status = 503
            await _respond(send, 503, str(exc), [(b"retry-after", b"1"), request_id])
        except RequestTimeoutError:
            self.metrics.timed_out(app, deployment, "http").inc()
            if not started:
                status = 408
                await _respond(send, 408, "request timed out (request_timeout_s)", echo)
        except ReplicaCallFailed as exc:
            log.warning("replica failed mid-call", request_id=request.request_id,
                        error=str(exc))
            if not started:
                status = 502
                await _respond(send, 502, "the replica serving this request failed", echo)
        finally:
            self.metrics.http(app, deployment, request.http.root_path or "/",
                              request.http.method, status, time.perf_counter() - started_at)
            tracing.finish(status, _server_error)
