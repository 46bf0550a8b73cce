"""A WebSocket played through the deployment's ingress ASGI app, over one gRPC stream.

The proxy sends the handshake (as an HTTP request), then the client's messages; this module
turns them into the ASGI WebSocket events the app receives (`websocket.connect`, `.receive`,
`.disconnect`) and what the app sends (`websocket.accept`, `.send`, `.close`) into frames
back. Close codes pass through both ways unchanged: the app's close code is what the
client sees, and the client's is what the app's `websocket.disconnect` says.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import structlog

from weir.protos import weir_pb2 as pb
from weir.replica.user_callable import UserCallable, http_scope

log = structlog.get_logger("weir.replica.websocket")

#: The client went away without a close frame (RFC 6455's "abnormal closure").
ABNORMAL_CLOSURE = 1006
#: The app failed (RFC 6455's "internal error").
INTERNAL_ERROR = 1011
#: The deployment has no ingress app to take the WebSocket ("unsupported data").
UNSUPPORTED = 1003


def websocket_scope(http: pb.HttpRequest) -> dict[str, Any]:
    """The ASGI scope of a WebSocket handshake forwarded as an HTTP request."""
    scope = http_scope(http)
    scope.update(type="websocket", scheme="wss" if http.scheme in ("https", "wss") else "ws",
                 subprotocols=_subprotocols(scope["headers"]))
    scope.pop("method", None)
    return scope


def _subprotocols(headers: list[tuple[bytes, bytes]]) -> list[str]:
    for name, value in headers:
        if name.lower() == b"sec-websocket-protocol":
            return [p.strip() for p in value.decode("latin-1").split(",") if p.strip()]
    return []


def to_frame(message: MutableMapping[str, Any]) -> pb.WebSocketFrame | None:
    """The frame for an ASGI message the app sent (None: nothing to send)."""
    kind = message["type"]
    if kind == "websocket.accept":
        return pb.WebSocketFrame(
            accept=True, subprotocol=message.get("subprotocol") or "",
            headers=[pb.Header(name=bytes(k), value=bytes(v))
                     for k, v in message.get("headers", [])])
    if kind == "websocket.send":
        text = message.get("text")
        if text is not None:
            return pb.WebSocketFrame(is_text=True, text=text)
        return pb.WebSocketFrame(data=message.get("bytes") or b"")
    if kind == "websocket.close":
        return pb.WebSocketFrame(close_code=message.get("code") or 1000,
                                 close_reason=message.get("reason") or "")
    return None


def to_event(frame: pb.WebSocketFrame | None) -> dict[str, Any]:
    """The ASGI event the app receives for a frame from the caller (None: the stream ended)."""
    if frame is None:
        return {"type": "websocket.disconnect", "code": ABNORMAL_CLOSURE}
    if frame.close_code:
        return {"type": "websocket.disconnect", "code": frame.close_code,
                "reason": frame.close_reason}
    if frame.is_text:
        return {"type": "websocket.receive", "text": frame.text}
    return {"type": "websocket.receive", "bytes": frame.data}


async def relay(user: UserCallable, request: pb.CallRequest,
                frames: AsyncIterator[pb.WebSocketFrame]) -> AsyncIterator[pb.WebSocketFrame]:
    """Run the WebSocket through the ingress app; yields the frames to send back."""
    if user.asgi_app is None:
        yield pb.WebSocketFrame(close_code=UNSUPPORTED,
                                close_reason="this deployment has no @serve.ingress app")
        return
    out: asyncio.Queue[pb.WebSocketFrame | None] = asyncio.Queue()
    connected = False
    closed = False

    async def receive() -> dict[str, Any]:
        nonlocal connected, closed
        if not connected:
            connected = True
            return {"type": "websocket.connect"}
        if closed:
            await asyncio.Event().wait()  # nothing more will come
        frame = await anext(frames, None)
        event = to_event(frame)
        closed = event["type"] == "websocket.disconnect"
        return event

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal closed
        frame = to_frame(message)
        if frame is not None:
            closed = closed or bool(frame.close_code)
            out.put_nowait(frame)

    async def run() -> None:
        try:
            await user.asgi_app(websocket_scope(request.http), receive, send)
            if not closed:
                out.put_nowait(pb.WebSocketFrame(close_code=1000))
        except Exception as exc:
            log.error("websocket app raised", exc_info=True)
            if not closed:
                out.put_nowait(pb.WebSocketFrame(close_code=INTERNAL_ERROR,
                                                 close_reason=type(exc).__name__))
        finally:
            out.put_nowait(None)

    task = asyncio.get_running_loop().create_task(run())
    try:
        while (frame := await out.get()) is not None:
            yield frame
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
