"""The replica's server on its channel, called over loopback by the data plane's own
transport, on the frame socket and on the gRPC stream alike: an HTTP call runs on the
channel's task for the call, so what the caller sees (one frame for a whole response,
chunks as they come, a 500, a timeout) and what the replica counts (its slots given back,
the user's code cancelled when the caller goes away) must hold without a task of its own."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import cloudpickle
import pytest
from starlette.requests import Request
from starlette.responses import StreamingResponse

from weir import auth
from weir.dataplane.frame_socket import FrameSocketCall, FrameSocketServer
from weir.dataplane.transport import CHANNEL_OPTIONS, ReplicaTransport
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc
from weir.replica.http_call import ResponseReplies
from weir.replica.server import ReplicaServer
from weir.replica.user_callable import UserCallable


class App:
    """Answers by path: /ok, /stream (three chunks), /boom (raises before answering),
    /slow (waits until cancelled, saying so)."""

    def __init__(self) -> None:
        self.cancelled: asyncio.Event | None = None
        self.waiting: asyncio.Event | None = None

    async def __call__(self, request: Request) -> Any:
        path = request.url.path
        if path == "/stream":
            async def chunks() -> AsyncIterator[bytes]:
                for part in (b"a", b"b", b"c"):
                    yield part
            return StreamingResponse(chunks())
        if path == "/boom":
            raise ValueError("no such thing")
        if path == "/slow":
            assert self.cancelled is not None and self.waiting is not None
            self.waiting.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return "ok"

    def add(self, a: int, b: int) -> int:
        return a + b


def get(path: str, deadline: float = 0.0) -> pb.CallRequest:
    return pb.CallRequest(request_id="r1", deadline=deadline,
                          http=pb.HttpRequest(method="GET", path=path, scheme="http"))


@pytest.fixture(params=["socket", "grpc"])
def channel(request: pytest.FixtureRequest) -> str:
    """Which connection the calls take: the frame socket, or the gRPC stream."""
    return str(request.param)


def with_replica(test: Callable[[ReplicaServer, ReplicaTransport, str, App],
                                Awaitable[None]], channel: str, max_ongoing: int = 5) -> None:
    async def main() -> None:
        user = UserCallable(cloudpickle.dumps((App, (), {})), max_threads=2)
        await user.construct()
        user.instance.cancelled, user.instance.waiting = asyncio.Event(), asyncio.Event()
        replica = ReplicaServer(lambda: None)
        replica.user, replica.state, replica.max_ongoing = user, pb.RUNNING, max_ongoing
        # Not start_server: it registers the process's metrics, once per process.
        server = auth.server(options=CHANNEL_OPTIONS)
        pb_grpc.add_ReplicaServicer_to_server(replica, server)
        address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        if channel == "socket":
            replica.channel_socket = FrameSocketServer(
                lambda frames: replica.Channel(frames, None))
            await replica.channel_socket.start("127.0.0.1")
        transport = ReplicaTransport()
        try:
            await asyncio.wait_for(test(replica, transport, address, user.instance), 20)
            mux = transport._muxes[address]
            assert isinstance(mux.call, FrameSocketCall) == (channel == "socket")
        finally:
            await transport.close()
            if replica.channel_socket is not None:
                await replica.channel_socket.stop()
            await server.stop(0)
            user.shutdown()

    asyncio.run(main())


async def replies(transport: ReplicaTransport, address: str,
                  request: pb.CallRequest) -> list[pb.CallReply]:
    return [reply async for reply in transport.stream(address, request, 10)]


def test_a_whole_response_is_one_reply_and_the_slot_comes_back(channel: str) -> None:
    async def test(replica: ReplicaServer, transport: ReplicaTransport, address: str,
                   app: App) -> None:
        [reply] = await replies(transport, address, get("/ok"))
        assert (reply.outcome, reply.status, reply.body, reply.more_body) == (
            pb.OK, 200, b"ok", False)
        assert (b"content-type", b"text/plain; charset=utf-8") in [
            (h.name, h.value) for h in reply.headers]
        assert replica.admitted == 0 and replica.idle.is_set()

    with_replica(test, channel)


def test_streamed_chunks_come_as_replies_of_their_own(channel: str) -> None:
    async def test(replica: ReplicaServer, transport: ReplicaTransport, address: str,
                   app: App) -> None:
        got = await replies(transport, address, get("/stream"))
        assert got[0].status == 200
        assert b"".join(r.body for r in got) == b"abc"
        assert [r.more_body for r in got][-1] is False
        assert replica.admitted == 0

    with_replica(test, channel)


def test_an_error_before_the_response_is_a_500_naming_it() -> None:
    async def test(replica: ReplicaServer, transport: ReplicaTransport, address: str,
                   app: App) -> None:
        [reply] = await replies(transport, address, get("/boom"))
        assert (reply.outcome, reply.status, reply.error_type) == (
            pb.USER_ERROR, 500, "ValueError")
        assert b"ValueError: no such thing" in reply.body
        assert replica.admitted == 0

    with_replica(test, channel)


def test_a_caller_going_away_cancels_the_users_code(channel: str) -> None:
    async def test(replica: ReplicaServer, transport: ReplicaTransport, address: str,
                   app: App) -> None:
        assert app.waiting is not None and app.cancelled is not None
        call = asyncio.get_running_loop().create_task(replies(transport, address,
                                                              get("/slow")))
        await app.waiting.wait()
        assert replica.admitted == 1
        call.cancel()  # the transport sends a cancel frame
        with contextlib.suppress(asyncio.CancelledError):
            await call
        await app.cancelled.wait()
        deadline = time.monotonic() + 5
        while replica.admitted and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert replica.admitted == 0

    with_replica(test, channel)


def test_a_call_past_its_deadline_is_cancelled_and_answered_timeout(channel: str) -> None:
    async def test(replica: ReplicaServer, transport: ReplicaTransport, address: str,
                   app: App) -> None:
        assert app.cancelled is not None
        [reply] = await replies(transport, address, get("/slow", time.time() + 0.3))
        assert reply.outcome == pb.TIMEOUT
        assert app.cancelled.is_set()
        assert replica.admitted == 0

    with_replica(test, channel)


def test_a_call_beyond_max_ongoing_is_refused(channel: str) -> None:
    async def test(replica: ReplicaServer, transport: ReplicaTransport, address: str,
                   app: App) -> None:
        assert app.waiting is not None
        call = asyncio.get_running_loop().create_task(replies(transport, address,
                                                              get("/slow")))
        await app.waiting.wait()
        [refused] = await replies(transport, address, get("/ok"))
        assert refused.outcome == pb.REJECTED and refused.ongoing == 1
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call

    with_replica(test, channel, max_ongoing=1)


def test_a_unary_handle_call_and_its_timeout(channel: str) -> None:
    async def test(replica: ReplicaServer, transport: ReplicaTransport, address: str,
                   app: App) -> None:
        request = pb.CallRequest(request_id="r2", method="add",
                                 pickled_args=cloudpickle.dumps(((2, 3), {})))
        reply = await transport.call(address, request, 10)
        assert (reply.outcome, cloudpickle.loads(reply.pickled)) == (pb.OK, 5)
        late = pb.CallRequest(request_id="r3", method="add", deadline=time.time() - 1,
                              pickled_args=cloudpickle.dumps(((2, 3), {})))
        assert (await transport.call(address, late, 10)).outcome == pb.TIMEOUT
        assert replica.admitted == 0

    with_replica(test, channel)


def test_response_replies_fold_the_start_into_the_first_chunk() -> None:
    sent: list[pb.CallReply] = []

    async def main() -> None:
        replies = ResponseReplies(sent.append, lambda: 3)
        await replies.send({"type": "http.response.start", "status": 201,
                            "headers": [(b"x-a", b"1")]})
        assert not sent and replies.started
        await replies.send({"type": "http.response.body", "body": b"one", "more_body": True})
        await replies.send({"type": "http.response.body", "body": b"two"})
        replies.finish()

    asyncio.run(main())
    assert [(r.status, r.ongoing, r.body, r.more_body, len(r.headers)) for r in sent] == [
        (201, 2, b"one", True, 1), (0, 0, b"two", False, 0)]


def test_a_call_cancelled_at_its_deadline_is_a_timeout_and_before_it_is_not() -> None:
    from weir.replica.server import DEADLINE_SLACK_S, cancelled_outcome

    assert cancelled_outcome(100.0, 100.0) == "TIMEOUT"
    assert cancelled_outcome(100.0, 100.0 - DEADLINE_SLACK_S / 2) == "TIMEOUT"
    assert cancelled_outcome(100.0, 99.0) == "CANCELLED"  # the caller went away
    assert cancelled_outcome(0.0, 1e9) == "CANCELLED"  # no deadline
