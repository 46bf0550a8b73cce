"""Fuzzing the raw HTTP/1.1 bytes a client may send (hypothesis), through uvicorn's parser
and Weir's `GuardedProtocol` (header byte limit and deadline), fed sans-I/O: no socket, a
transport that records what the server writes. Whatever the bytes and however they are
split, nothing raises, and what the server writes back is HTTP responses (or nothing)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weir.proxy.ingress_limits import HeaderCountLimit, IngressLimits

uvicorn = pytest.importorskip("uvicorn")

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
LIMITS = IngressLimits(max_header_bytes=300, max_headers=5, header_timeout_s=30)
STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")


class RecordingTransport(asyncio.Transport):
    """What uvicorn's protocol uses of a transport; keeps what is written."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000),
                "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol  # a WebSocket upgrade: the bytes that follow go there

    def get_protocol(self) -> Any:
        return self.protocol


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body") or message["type"] == "http.disconnect":
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


line = st.sampled_from([b"GET / HTTP/1.1\r\n", b"POST /a?b=c HTTP/1.1\r\n", b"GET / HTTP/1.0\r\n",
                        b"BREW /pot HTTP/1.1\r\n", b"GET /\r\n", b"\r\n"])
header = st.one_of(
    st.sampled_from([b"Host: x\r\n", b"Content-Length: 5\r\n", b"Content-Length: -1\r\n",
                     b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n",
                     b"Expect: 100-continue\r\n", b"X-Serve-Call-Method: \xff\r\n",
                     b"Upgrade: websocket\r\nConnection: Upgrade\r\n"]),
    st.builds(lambda n, v: n + b": " + v + b"\r\n",
              st.from_regex(rb"\A[A-Za-z][A-Za-z0-9-]{0,10}\Z"),
              st.from_regex(rb"\A[ -~]{0,60}\Z")),
    st.builds(lambda n, v: n + b": " + v + b"\r\n", st.binary(min_size=1, max_size=10),
              st.binary(max_size=40)))
request = st.builds(
    lambda first, host, hs, body, junk: (first + (b"Host: x\r\n" if host else b"")
                                         + b"".join(hs) + b"\r\n" + body + junk),
    line, st.booleans(), st.lists(header, max_size=8), st.binary(max_size=20),
    st.just(b"") | st.binary(max_size=10))
streams = st.lists(request, min_size=1, max_size=3).map(b"".join)


async def feed(data: bytes, cuts: list[int]) -> RecordingTransport:
    config = uvicorn.Config(app=HeaderCountLimit(echo_app, LIMITS.max_headers), lifespan="off",
                            log_level="critical", **LIMITS.uvicorn_settings())
    config.load()
    protocol = config.http_protocol_class(config=config,
                                          server_state=uvicorn.server.ServerState(),
                                          app_state={})
    transport = RecordingTransport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    start = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        if transport.closed:
            break
        if cut > start:
            transport.protocol.data_received(data[start:cut])
            start = cut
        for _ in range(20):  # let the app's task run (no timers involved)
            await asyncio.sleep(0)
    transport.protocol.connection_lost(None)
    for _ in range(20):
        await asyncio.sleep(0)
    return transport


@FUZZ
@given(streams, st.lists(st.integers(0, 2000), max_size=5))
def test_any_bytes_get_http_responses_or_nothing(data: bytes, cuts: list[int]) -> None:
    transport = asyncio.run(feed(data, cuts))
    written = bytes(transport.written)
    if written:
        assert written.startswith(b"HTTP/1.1 "), written[:80]
        statuses = {int(s) for s in STATUS_LINE.findall(written)}
        assert statuses <= {100, 101, 200, 400, 404, 413, 422, 431, 500, 503}, (statuses, data)
        assert 500 not in statuses, (written, data)  # the app never failed


def test_headers_past_the_byte_limit_get_431_or_400() -> None:
    data = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"x-big: " + b"a" * 400 + b"\r\n"
    transport = asyncio.run(feed(data, [30, 200]))
    assert transport.closed and re.match(rb"HTTP/1\.1 (431|400) ", bytes(transport.written))
