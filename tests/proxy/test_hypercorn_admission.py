"""Admission in hypercorn's HTTP/1.1 protocol: a real hypercorn on loopback, raw bytes in,
exact answers out; the admission is a stand-in that sheds the paths under /shed."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import hypercorn.protocol
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config

from weir.proxy.admission import ADMITTED_KEY
from weir.proxy.hypercorn_admission import admission_in_protocol, keeps_alive, request_facts


class ShedUnderShed:
    """Sheds every request whose path starts with /shed; records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []
        self.entered: list[tuple[str, str]] = []

    def check(self, path: str, method: str) -> tuple[tuple[str, str] | None, str]:
        self.asked.append((path, method))
        return (None, f"shed {path}") if path.startswith("/shed") else (("app", "D"), "")

    def enter(self, key: tuple[str, str]) -> None:
        self.entered.append(key)


#: What the app found in each request's scope under ADMITTED_KEY.
marked: list[object] = []


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        return
    if scope["type"] != "http":
        return
    marked.append(scope.get(ADMITTED_KEY, "unmarked"))
    if scope["path"] == "/slow":
        await asyncio.sleep(0.6)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def complete_responses(data: bytes) -> int:
    """How many whole responses `data` holds (framed by content-length, or bodiless)."""
    count = 0
    while b"\r\n\r\n" in data:
        head, data = data.split(b"\r\n\r\n", 1)
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        if len(data) < length:
            break
        data = data[length:]
        count += 1
    return count


async def _read_until(reader: asyncio.StreamReader, count: int) -> bytes:
    """Read until `count` whole responses came, or EOF."""
    data = b""
    while complete_responses(data) < count:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        data += chunk
    return data


@contextlib.asynccontextmanager
async def hypercorn_with(admission: ShedUnderShed, **settings: Any) -> AsyncIterator[int]:
    """A hypercorn serving `app` with `admission` in its protocol; yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]
    config.accesslog = None
    for name, value in settings.items():
        setattr(config, name, value)
    stop = asyncio.Event()
    with admission_in_protocol(admission) as installed:  # type: ignore[arg-type]
        assert installed
        server = asyncio.get_running_loop().create_task(
            serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        try:
            yield port
        finally:
            stop.set()
            await server


def exchange(admission: ShedUnderShed, requests: bytes, responses: int) -> tuple[bytes, bool]:
    """Send `requests` on one connection to a hypercorn with `admission` in its protocol;
    returns the bytes of `responses` answers and whether the server then closed it."""

    async def scenario() -> tuple[bytes, bool]:
        async with hypercorn_with(admission) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(requests)
            answered = await _read_until(reader, responses)
            try:
                closed = await asyncio.wait_for(reader.read(1), 0.5) == b""
            except TimeoutError:
                closed = False
            writer.close()
        return answered, closed

    return asyncio.run(scenario())


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode()


def test_a_shed_request_gets_a_whole_503_and_the_connection_its_next_request() -> None:
    admission = ShedUnderShed()
    answered, closed = exchange(admission, get("/shed/a%20b?q=1") + get("/ok") + get("/shed/c"),
                                3)
    first, second, third = answered.split(b"HTTP/1.1 ")[1:]
    assert first == (b"503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
                     b"content-length: 14\r\nretry-after: 1\r\n\r\nshed /shed/a b")
    assert second.startswith(b"200 ") and second.endswith(b"ok")
    assert third.startswith(b"503 ") and third.endswith(b"shed /shed/c")
    assert not closed  # kept alive after each 503
    assert admission.asked == [("/shed/a b", "GET"), ("/ok", "GET"), ("/shed/c", "GET")]
    # The admitted one was counted in by the protocol, and marked so for the gate.
    assert admission.entered == [("app", "D")] and marked[-1] == ("app", "D")


def test_a_shed_request_with_a_body_closes_the_connection_unread() -> None:
    post = b"POST /shed/p HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello"
    answered, closed = exchange(ShedUnderShed(), post, 1)
    assert answered.startswith(b"HTTP/1.1 503 ") and b"connection: close\r\n" in answered
    assert answered.endswith(b"shed /shed/p")
    assert closed


@pytest.mark.parametrize("request_line, header", [
    (b"GET /shed/x HTTP/1.1", b"connection: close\r\n"),
    (b"GET /shed/x HTTP/1.0", b""),
])
def test_a_shed_request_of_a_client_that_closes_closes_the_connection(
        request_line: bytes, header: bytes) -> None:
    # The 503 is built without h11, which would otherwise have decided this itself.
    answered, closed = exchange(ShedUnderShed(), request_line + b"\r\nhost: x\r\n" + header
                                + b"\r\n" + get("/ok"), 1)
    assert answered.startswith(b"HTTP/1.1 503 ") and b"connection: close\r\n" in answered
    assert closed and b"200" not in answered


def test_keeps_alive() -> None:
    class Request:
        def __init__(self, version: bytes, *headers: tuple[bytes, bytes]) -> None:
            self.http_version, self.headers = version, list(headers)

    assert keeps_alive(Request(b"1.1", (b"host", b"x")))
    assert keeps_alive(Request(b"1.1", (b"connection", b"keep-alive")))
    assert not keeps_alive(Request(b"1.1", (b"connection", b"Keep-Alive, Close")))
    assert not keeps_alive(Request(b"1.0", (b"connection", b"keep-alive")))


def test_websocket_upgrades_are_left_to_the_app() -> None:
    admission = ShedUnderShed()
    upgrade = (b"GET /shed/ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\n"
               b"upgrade: websocket\r\nsec-websocket-version: 13\r\n"
               b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    answered, _ = exchange(admission, upgrade, 1)
    assert answered.startswith(b"HTTP/1.1 101 ")
    assert admission.asked == []


def test_hypercorn_is_itself_again_outside() -> None:
    original = hypercorn.protocol.H11Protocol
    with admission_in_protocol(ShedUnderShed()):  # type: ignore[arg-type]
        assert hypercorn.protocol.H11Protocol is not original
    assert hypercorn.protocol.H11Protocol is original
    with admission_in_protocol(None) as installed:
        assert not installed and hypercorn.protocol.H11Protocol is original


def test_request_facts() -> None:
    assert request_facts([(b"host", b"x")]) == (False, False)
    assert request_facts([(b"content-length", b"0")]) == (False, False)
    assert request_facts([(b"content-length", b"3")]) == (False, True)
    assert request_facts([(b"transfer-encoding", b"chunked")]) == (False, True)
    assert request_facts([(b"upgrade", b"websocket")]) == (True, False)


def test_a_connection_whose_requests_are_shed_lives_while_they_come() -> None:
    # Each answer, shed or not, starts the connection's keep-alive anew (round 2 let
    # hypercorn's timer run through shed requests: under load a busy connection was closed
    # every keep_alive_timeout, racing its next request), at the cost of one float a request.
    async def scenario() -> tuple[int, float, bool]:
        async with hypercorn_with(ShedUnderShed(), keep_alive_timeout=0.4) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            opened = time.monotonic()
            answered = 0
            while time.monotonic() - opened < 1.5:
                writer.write(get("/shed/x"))
                data = await _read_until(reader, 1)
                assert data, "closed while its requests kept coming"
                answered += complete_responses(data)
                await asyncio.sleep(0.05)
            last = time.monotonic()
            closed = await asyncio.wait_for(reader.read(1), 3) == b""
            writer.close()
            return answered, time.monotonic() - last, closed

    answered, idle, closed = asyncio.run(scenario())
    assert answered >= 10 and closed and 0.2 < idle < 2


def test_answered_requests_keep_the_connection_alive_for_the_timeout_after_each() -> None:
    # The protocol keeps the timer of admitted requests too (hypercorn's costs a task
    # cancelled and awaited, and two made, per request): idle for keep_alive_timeout after
    # its last answer, the connection closes; a request longer than that is not cut.
    async def scenario() -> tuple[bytes, float]:
        async with hypercorn_with(ShedUnderShed(), keep_alive_timeout=0.3) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get("/ok"))
            await _read_until(reader, 1)
            writer.write(get("/slow"))
            slow = await _read_until(reader, 1)
            answered = time.monotonic()
            closed = await asyncio.wait_for(reader.read(1), 3) == b""
            assert closed
            writer.close()
            return slow, time.monotonic() - answered

    slow, idle = asyncio.run(scenario())
    assert slow.startswith(b"HTTP/1.1 200 ") and slow.endswith(b"ok")
    assert 0.2 < idle < 2


def test_shutdown_closes_an_idle_kept_alive_connection_at_once() -> None:
    async def scenario() -> float:
        admission = ShedUnderShed()
        async with contextlib.AsyncExitStack() as stack:
            port = await stack.enter_async_context(
                hypercorn_with(admission, keep_alive_timeout=30, graceful_timeout=10))
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get("/ok"))
            await _read_until(reader, 1)
            stopping = time.monotonic()
        writer.close()
        return time.monotonic() - stopping

    assert asyncio.run(scenario()) < 3
