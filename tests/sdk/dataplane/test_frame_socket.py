"""The frame socket: frames both ways on a plain TCP connection, only for a caller with the
cluster token, and a connection that drops ends the replica's side of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from weir.dataplane import frame_socket
from weir.dataplane.frame_socket import FrameSocketClosed, FrameSocketServer, connect
from weir.protos import weir_pb2 as pb


class Echo:
    """A channel handler that answers each message with its call ids, and remembers how
    many connections it served and whether each one's frames ended."""

    def __init__(self) -> None:
        self.served = 0
        self.ended = asyncio.Event()

    async def __call__(self, frames: AsyncIterator[pb.Frame]) -> AsyncIterator[pb.Frame]:
        self.served += 1
        try:
            async for message in frames:
                yield pb.Frame(batch=[pb.Frame(call_id=f.call_id, last=True)
                                      for f in message.batch])
        finally:
            self.ended.set()


def test_frames_travel_both_ways_with_the_right_token() -> None:
    async def main() -> None:
        echo = Echo()
        server = FrameSocketServer(echo, token="s3cret")
        port = await server.start("127.0.0.1")
        call = await connect("127.0.0.1", port, 5, token="s3cret")
        await call.write(pb.Frame(batch=[pb.Frame(call_id=1), pb.Frame(call_id=2)]))
        big = pb.Frame(batch=[pb.Frame(call_id=3, request=pb.CallRequest(
            pickled_args=b"x" * 3_000_000))])
        await call.write(big)  # more than the write buffer: drained, not lost
        replies = aiter(call)
        assert [f.call_id for f in (await anext(replies)).batch] == [1, 2]
        assert [f.call_id for f in (await anext(replies)).batch] == [3]
        call.cancel()
        await asyncio.wait_for(echo.ended.wait(), 5)  # the replica's side ended with it
        await server.stop()

    asyncio.run(main())


def test_a_caller_without_the_token_is_refused_before_any_frame_is_read() -> None:
    async def main() -> None:
        echo = Echo()
        server = FrameSocketServer(echo, token="s3cret")
        port = await server.start("127.0.0.1")
        for token in ("wrong", ""):
            with pytest.raises(FrameSocketClosed, match="refused the cluster token"):
                await connect("127.0.0.1", port, 5, token=token)
        assert echo.served == 0
        await server.stop()

    asyncio.run(main())


def test_a_message_over_the_limit_ends_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frame_socket, "MAX_MESSAGE_BYTES", 100)

    async def main() -> None:
        echo = Echo()
        server = FrameSocketServer(echo, token="")
        port = await server.start("127.0.0.1")
        call = await connect("127.0.0.1", port, 5, token="")
        await call.write(pb.Frame(batch=[pb.Frame(call_id=1, request=pb.CallRequest(
            pickled_args=b"x" * 200))]))
        assert [message async for message in call] == []  # the replica closed it
        await server.stop()

    asyncio.run(main())


def test_a_long_token_or_a_message_that_is_no_frame_ends_the_connection() -> None:
    async def main() -> None:
        echo = Echo()
        server = FrameSocketServer(echo, token="")
        port = await server.start("127.0.0.1")
        # A stranger announcing a huge "token": refused before it is read.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write((frame_socket.MAX_TOKEN_BYTES + 1).to_bytes(4, "big"))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert echo.served == 0
        # Past the check, bytes that are no Frame end the frames: the handler ends too.
        call = await connect("127.0.0.1", port, 5, token="")
        call._writer.write(frame_socket.encode(b"\xff\xff\xff"))
        await asyncio.wait_for(echo.ended.wait(), 5)
        assert [message async for message in call] == []
        await server.stop()

    asyncio.run(main())
