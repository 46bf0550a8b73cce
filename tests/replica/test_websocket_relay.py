"""WebSocket frames <-> ASGI events (weir.replica.websocket_relay), and one WebSocket played
through a real FastAPI app with no network."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import cloudpickle
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from weir import serve
from weir.protos import weir_pb2 as pb
from weir.replica.user_callable import UserCallable
from weir.replica.websocket_relay import relay, to_event, to_frame, websocket_scope


def test_scope_of_a_handshake() -> None:
    scope = websocket_scope(pb.HttpRequest(
        method="GET", path="/app/ws", root_path="/app", scheme="http",
        headers=[pb.Header(name=b"sec-websocket-protocol", value=b"chat, json")]))
    assert scope["type"] == "websocket" and scope["scheme"] == "ws"
    assert scope["subprotocols"] == ["chat", "json"] and "method" not in scope


def test_frames_and_events() -> None:
    assert to_event(pb.WebSocketFrame(is_text=True, text="x")) == {
        "type": "websocket.receive", "text": "x"}
    assert to_event(pb.WebSocketFrame(data=b"\x00")) == {
        "type": "websocket.receive", "bytes": b"\x00"}
    assert to_event(pb.WebSocketFrame(close_code=4000, close_reason="r")) == {
        "type": "websocket.disconnect", "code": 4000, "reason": "r"}
    assert to_event(None)["code"] == 1006
    assert to_frame({"type": "websocket.close"}) == pb.WebSocketFrame(close_code=1000)
    assert to_frame({"type": "websocket.send", "bytes": b"b"}) == pb.WebSocketFrame(data=b"b")
    assert to_frame({"type": "websocket.accept", "subprotocol": "chat"}).accept


app = FastAPI()
SEEN: list[int] = []


@serve.deployment
@serve.ingress(app)
class Echo:
    @app.websocket("/ws")
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text((await websocket.receive_text()).upper())
        except WebSocketDisconnect as exc:
            SEEN.append(exc.code)


def test_a_websocket_through_an_ingress_app() -> None:
    async def main() -> tuple[list[pb.WebSocketFrame], list[int]]:
        user = UserCallable(cloudpickle.dumps((Echo.func_or_class, (), {})), max_threads=1)
        await user.construct()
        incoming: asyncio.Queue[pb.WebSocketFrame] = asyncio.Queue()

        async def frames() -> AsyncIterator[pb.WebSocketFrame]:
            while True:
                yield await incoming.get()

        request = pb.CallRequest(http=pb.HttpRequest(method="GET", path="/ws"))
        out = []
        incoming.put_nowait(pb.WebSocketFrame(is_text=True, text="hi"))
        incoming.put_nowait(pb.WebSocketFrame(close_code=4123))
        async for frame in relay(user, request, frames()):
            out.append(frame)
        # The class was shipped by value: its module globals are a copy of this module's.
        return out, user.instance.ws.__globals__["SEEN"]

    out, seen = asyncio.run(asyncio.wait_for(main(), 5))
    assert out[0].accept and out[1].text == "HI" and len(out) == 2
    assert seen == [4123]
