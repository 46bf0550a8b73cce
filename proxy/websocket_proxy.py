"""WebSockets through the proxy to a replica's `@serve.ingress` app.

The handshake is routed like a call (`DataPlane.websocket`: the router picks a replica, one
that refuses is skipped); the proxy accepts the client only once the app accepted, with
the app's subprotocol and headers, so an app that closes first refuses the handshake
(HTTP 403) as it would served directly. Then two pumps move messages each way until either
side closes; close codes pass through unchanged in both directions. A WebSocket holds one of
its replica's max_ongoing_requests while it is open, as in Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
import structlog

from weir.cancellation import within
from weir.dataplane.caller import DataPlane
from weir.dataplane.request_id import new_request_id
from weir.dataplane.route_table import match_route
from weir.dataplane.transport import ReplicaCallFailed
from weir.exceptions import BackPressureError, DeploymentUnavailableError
from weir.protos import weir_pb2 as pb

log = structlog.get_logger("weir.proxy.websocket")

#: RFC 6455 close codes the proxy uses itself.
GOING_AWAY = 1001
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
POLICY_VIOLATION = 1008


def _request(scope: dict[str, Any], app_prefix: str) -> pb.CallRequest:
    request_id = next((v.decode("latin-1") for k, v in scope["headers"]
                       if k == b"x-request-id"), "") or new_request_id()
    client = scope.get("client") or ("", 0)
    return pb.CallRequest(
        request_id=request_id, caller="proxy",
        http=pb.HttpRequest(
            method="GET", path=scope["path"], query_string=scope.get("query_string", b""),
            headers=[pb.Header(name=k, value=v) for k, v in scope["headers"]],
            scheme=scope.get("scheme", "ws"),
            # The cluster's http_options.root_path (put in the scope by the proxy app), then
            # the route prefix, as for HTTP requests.
            root_path=scope.get("root_path", "") + (app_prefix if app_prefix != "/" else ""),
            client_host=client[0] or "", client_port=client[1] or 0,
            http_version=scope.get("http_version", "1.1")))


def _client_message(frame: pb.WebSocketFrame) -> dict[str, Any]:
    if frame.close_code:
        return {"type": "websocket.close", "code": frame.close_code,
                "reason": frame.close_reason}
    if frame.is_text:
        return {"type": "websocket.send", "text": frame.text}
    return {"type": "websocket.send", "bytes": frame.data}


async def relay_websocket(plane: DataPlane, scope: dict[str, Any], receive: Any,
                          send: Any) -> None:
    """Serve one client WebSocket by relaying it to a replica. `scope["root_path"]`, if
    set, is the cluster's http_options.root_path, which `scope["path"]` starts with."""
    table = plane.table
    # Routes match the path under the cluster's root_path (the proxy app checked it is).
    local = scope["path"][len(scope.get("root_path", "")):] or "/"
    route = match_route(table.routes, local) if table else None
    connect = await receive()
    if connect["type"] != "websocket.connect":
        return
    if route is None:
        await send({"type": "websocket.close", "code": POLICY_VIOLATION})
        return
    request = _request(scope, route.route_prefix)
    structlog.contextvars.bind_contextvars(request_id=request.request_id)
    try:
        async with plane.websocket(route.app, route.deployment, request) as (call, first):
            if not first.accept:
                # Closed (or failed) before accepting: the handshake is refused.
                await send({"type": "websocket.close", "code": first.close_code or
                            INTERNAL_ERROR, "reason": first.close_reason})
                return
            await send({"type": "websocket.accept", "subprotocol": first.subprotocol or None,
                        "headers": [(h.name, h.value) for h in first.headers]
                        + [(b"x-request-id", request.request_id.encode("latin-1"))]})
            await _pump(call, receive, send)
    except (BackPressureError, DeploymentUnavailableError) as exc:
        log.warning("websocket refused", reason=str(exc))
        await send({"type": "websocket.close", "code": TRY_AGAIN_LATER})
    except ReplicaCallFailed as exc:
        log.warning("websocket failed", error=str(exc))
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": INTERNAL_ERROR})


async def _pump(call: Any, receive: Any, send: Any) -> None:
    """Move messages both ways until either side closes."""

    async def upstream() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                frame = (pb.WebSocketFrame(is_text=True, text=text) if text is not None
                         else pb.WebSocketFrame(data=message.get("bytes") or b""))
                await call.write(frame)
            elif message["type"] == "websocket.disconnect":
                log.info("client closed the websocket", code=message.get("code"))
                await call.write(pb.WebSocketFrame(
                    close_code=message.get("code") or 1005,
                    close_reason=message.get("reason") or ""))
                await call.done_writing()
                return

    async def downstream() -> None:
        while True:
            frame = await call.read()
            if frame is grpc.aio.EOF:
                await send({"type": "websocket.close", "code": INTERNAL_ERROR})
                return
            await send(_client_message(frame))
            if frame.close_code:
                return

    up = asyncio.ensure_future(upstream())
    down = asyncio.ensure_future(downstream())
    try:
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        if down in done:
            down.result()
            return
        up.result()
        # The client left; give the app a moment to end its side, then stop.
        with contextlib.suppress(Exception):  # the client is gone: nothing to tell it
            await within(down, 1.0)
    except grpc.aio.AioRpcError as exc:
        log.warning("websocket stream to the replica failed", error=exc.code().name)
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": INTERNAL_ERROR})
    finally:
        up.cancel()
        down.cancel()
