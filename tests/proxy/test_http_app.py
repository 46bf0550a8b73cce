"""proxy.http_app with a fake data plane: when a request body is one message to the replica
and when it streams, how a body past the limit or a client gone ends the call, and that a
reply stream the proxy stops reading is closed at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from weir.dataplane.request_body import RequestBody
from weir.dataplane.route_table import RouteEntry, RouteTable
from weir.protos import weir_pb2 as pb
from weir.proxy.http_app import ProxyApp, with_request_id

Message = dict[str, Any]


class FakePlane:
    """Answers every call with the whole body it received, once the body has ended."""

    def __init__(self, limit: int = 1000) -> None:
        self.table = RouteTable(routes=[RouteEntry("/", "app", "ingress")],
                                http_options={"max_request_body_bytes": limit})
        self.routers: dict[tuple[str, str], Any] = {}
        #: Per call: the body its first message carried, and whether more followed.
        self.first_messages: list[tuple[bytes, bool]] = []
        self.called = asyncio.Event()
        self.cancelled = asyncio.Event()
        #: Set: calls wait for it before answering (the replica is at work).
        self.working: asyncio.Event | None = None
        #: The first reply is a user error (more would follow); set once the stream closed.
        self.fail_first = False
        self.closed = asyncio.Event()
        self.streams: list[AsyncGenerator[pb.CallReply, None]] = []
        self.requests: list[pb.CallRequest] = []

    def stream(self, app: str, deployment: str, request: pb.CallRequest,
               deadline: float | None,
               body: RequestBody | None = None) -> AsyncGenerator[pb.CallReply, None]:
        self.requests.append(request)
        # Held, so that only an explicit close ends it (not its collection).
        replies = self._stream(request, body)
        self.streams.append(replies)
        return replies

    async def _stream(self, request: pb.CallRequest,
                      body: RequestBody | None) -> AsyncGenerator[pb.CallReply, None]:
        more = body.seal() if body is not None else False
        self.first_messages.append((request.http.body, more))
        self.called.set()
        received = [request.http.body]
        try:
            if self.working is not None:
                await self.working.wait()
            if self.fail_first:
                yield pb.CallReply(outcome=pb.USER_ERROR, error_type="ValueError", error="no")
            if body is not None and more:
                async for data, _ in body.rest():
                    received.append(data)
            yield pb.CallReply(outcome=pb.OK, status=200, body=b"".join(received))
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        finally:
            self.closed.set()


def request(body: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


async def serve(plane: FakePlane, client: asyncio.Queue[Message],
                headers: list[tuple[bytes, bytes]] | None = None,
                ) -> tuple[asyncio.Task[None], list[Message]]:
    """Start one POST through the proxy app; returns its task and what it sends back."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        message = await client.get()
        if message["type"] == "boom":
            raise OSError("the server could not read from the client")
        return message

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers or [],
             "query_string": b""}
    app = ProxyApp(plane)  # type: ignore[arg-type]
    return asyncio.ensure_future(app(scope, receive, send)), sent


def test_a_body_whole_in_the_first_message_is_one_message() -> None:
    async def main() -> None:
        plane, client = FakePlane(), asyncio.Queue[Message]()
        client.put_nowait(request(b"abc", more=False))
        task, sent = await serve(plane, client)
        await task
        assert plane.first_messages == [(b"abc", False)]
        assert sent[1]["body"] == b"abc"

    asyncio.run(main())


def test_a_body_whose_end_is_already_in_is_folded_into_one_message() -> None:
    # hypercorn hands a small body and its end as two messages, both there at once.
    async def main() -> None:
        plane, client = FakePlane(), asyncio.Queue[Message]()
        client.put_nowait(request(b"abc", more=True))
        client.put_nowait(request(b"", more=False))
        task, _ = await serve(plane, client)
        await task
        assert plane.first_messages == [(b"abc", False)]

    asyncio.run(main())


def test_a_body_still_arriving_streams_after_the_first_chunk() -> None:
    async def main() -> None:
        plane, client = FakePlane(), asyncio.Queue[Message]()
        client.put_nowait(request(b"first", more=True))
        task, sent = await serve(plane, client)
        await asyncio.wait_for(plane.called.wait(), 5)
        assert plane.first_messages == [(b"first", True)]  # the call went before the rest
        client.put_nowait(request(b"-second", more=True))
        client.put_nowait(request(b"-last", more=False))
        await task
        assert sent[1]["body"] == b"first-second-last"

    asyncio.run(main())


def test_a_chunked_body_past_the_limit_gets_413_and_cancels_the_call() -> None:
    async def main() -> None:
        plane, client = FakePlane(limit=10), asyncio.Queue[Message]()
        client.put_nowait(request(b"x" * 6, more=True))
        task, sent = await serve(plane, client)
        await asyncio.wait_for(plane.called.wait(), 5)
        client.put_nowait(request(b"x" * 6, more=True))
        await task
        assert sent[0]["status"] == 413
        assert plane.cancelled.is_set()

    asyncio.run(main())


def test_a_client_gone_mid_body_cancels_the_call() -> None:
    async def main() -> None:
        plane, client = FakePlane(), asyncio.Queue[Message]()
        client.put_nowait(request(b"x", more=True))
        task, sent = await serve(plane, client)
        await asyncio.wait_for(plane.called.wait(), 5)
        client.put_nowait({"type": "http.disconnect"})
        await task
        assert plane.cancelled.is_set()
        assert sent == []

    asyncio.run(main())


def test_a_client_gone_while_the_replica_works_cancels_the_call() -> None:
    async def main() -> None:
        plane, client = FakePlane(), asyncio.Queue[Message]()
        plane.working = asyncio.Event()
        client.put_nowait(request(b"abc", more=False))
        task, sent = await serve(plane, client)
        await asyncio.wait_for(plane.called.wait(), 5)
        client.put_nowait({"type": "http.disconnect"})
        await task
        assert plane.cancelled.is_set()
        assert sent == []

    asyncio.run(main())


def test_a_reply_stream_left_early_is_closed_at_once() -> None:
    # A user error answers 500 without reading on: the call must end then (its replica slot
    # freed), not whenever the abandoned stream is collected.
    async def main() -> None:
        plane, client = FakePlane(), asyncio.Queue[Message]()
        plane.fail_first = True
        client.put_nowait(request(b"abc", more=False))
        task, sent = await serve(plane, client)
        await task
        assert sent[0]["status"] == 500
        assert plane.closed.is_set()

    asyncio.run(main())


def test_a_whole_response_is_its_start_and_one_body_message() -> None:
    # The replica's last body message ends the response: no empty message after it (each
    # ASGI message is a write to the client's socket).
    async def main() -> None:
        plane, client = FakePlane(), asyncio.Queue[Message]()
        client.put_nowait(request(b"abc", more=False))
        task, sent = await serve(plane, client)
        await task
        assert [(m["type"], m.get("more_body", False)) for m in sent] == [
            ("http.response.start", False), ("http.response.body", False)]
        assert sent[1]["body"] == b"abc"

    asyncio.run(main())


def test_the_call_carries_the_headers_and_the_clients_request_id() -> None:
    async def main() -> None:
        plane, client = FakePlane(), asyncio.Queue[Message]()
        client.put_nowait(request(b"", more=False))
        headers = [(b"x-request-id", b"abc-1"), (b"x-serve-call-method", b"other"),
                   (b"accept", b"*/*")]
        task, sent = await serve(plane, client, headers)
        await task
        [call] = plane.requests
        assert (call.request_id, call.method, call.caller) == ("abc-1", "other", "proxy")
        assert [(h.name, h.value) for h in call.http.headers] == headers
        assert (call.http.method, call.http.path, call.http.client_host) == ("POST", "/", "")
        assert (b"x-request-id", b"abc-1") in sent[0]["headers"]

    asyncio.run(main())


def test_a_request_without_an_id_gets_32_hex_digits() -> None:
    async def main() -> str:
        plane, client = FakePlane(), asyncio.Queue[Message]()
        client.put_nowait(request(b"", more=False))
        task, _ = await serve(plane, client)
        await task
        return plane.requests[0].request_id

    request_id = asyncio.run(main())
    assert len(request_id) == 32 and int(request_id, 16) >= 0


def test_the_server_cancelling_the_request_is_not_taken_for_a_client_gone() -> None:
    # The call runs in the request's own task, cancelled by the watcher when the client
    # leaves: a cancel from elsewhere (the server stopping) must still end the task.
    async def main() -> None:
        plane, client = FakePlane(), asyncio.Queue[Message]()
        plane.working = asyncio.Event()
        client.put_nowait(request(b"abc", more=False))
        task, sent = await serve(plane, client)
        await asyncio.wait_for(plane.called.wait(), 5)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        assert task.cancelled()
        assert plane.cancelled.is_set()
        assert sent == []

    asyncio.run(main())


def test_the_proxys_own_answers_carry_the_request_id() -> None:
    async def main() -> list[Message]:
        plane, client = FakePlane(), asyncio.Queue[Message]()
        plane.fail_first = True  # a user error with no status: the proxy answers 500
        client.put_nowait(request(b"", more=False))
        task, sent = await serve(plane, client, [(b"x-request-id", b"id-7")])
        await task
        return sent

    start = asyncio.run(main())[0]
    assert start["status"] == 500
    assert (b"x-request-id", b"id-7") in start["headers"]


def test_an_apps_own_request_id_header_is_kept() -> None:
    ours = (b"x-request-id", b"proxy-id")
    assert with_request_id([(b"X-Request-ID", b"app-id")], ours) == [(b"X-Request-ID", b"app-id")]
    assert with_request_id([(b"a", b"1")], ours) == [(b"a", b"1"), ours]


def test_a_server_failing_to_read_the_client_cancels_the_call() -> None:
    async def main() -> None:
        plane, client = FakePlane(), asyncio.Queue[Message]()
        plane.working = asyncio.Event()
        client.put_nowait(request(b"abc", more=False))
        task, sent = await serve(plane, client)
        await asyncio.wait_for(plane.called.wait(), 5)
        client.put_nowait({"type": "boom"})  # `receive` below raises on it
        await asyncio.wait_for(task, 5)
        assert plane.cancelled.is_set()
        assert sent == []

    asyncio.run(main())
