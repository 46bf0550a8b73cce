"""`Replica.Channel` without gRPC: the same `Frame` messages on a plain TCP connection, each
prefixed with its length.

Why. A message round trip on a grpc.aio stream costs 110-200 µs of CPU, both ends counted
(the Python write and read coroutines, the completion queue's poller thread waking the
loop), against 12-18 µs on a socket (`bench/channel_message_cost.py`), and with Ray's
default of 5 calls in flight per replica few frames share a message. Everything else stays
on gRPC: only the channel's frames move here, and a caller that cannot reach the socket
keeps using `Replica.Channel`.

The replica names the socket's port over gRPC (`Replica.ChannelSocket`, a call that carries
the cluster token like every other). On the socket, the caller first sends the cluster
token as a message of its own; the replica compares it in constant time and answers one
byte (`ACCEPTED`) before it reads a frame, or closes the connection: no frame of a caller
without the token is ever parsed, let alone unpickled. An empty token turns the check off,
as on the gRPC servers (`weir.auth`).
"""

from __future__ import annotations

import asyncio
import hmac
import os
import struct
from collections.abc import AsyncIterator, Callable

import structlog
from google.protobuf.message import DecodeError

from weir import auth
from weir.cancellation import within
from weir.protos import weir_pb2 as pb

log = structlog.get_logger("weir.dataplane.frame_socket")

_LENGTH = struct.Struct("!I")
ACCEPTED = b"\x01"
#: The largest message on a channel, socket or gRPC: bodies up to the proxy's limit (100 MB
#: by default) plus headroom.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
#: How long the replica waits for a new connection's token, and how long a token may be:
#: a stranger must not make it buffer a large message before the check.
TOKEN_TIMEOUT_S = 5.0
MAX_TOKEN_BYTES = 4096
#: Past this many bytes waiting in its buffer, a writer waits for the peer to read.
WRITE_BUFFER_HIGH = 1024 * 1024


#: Set to 0 to keep every channel on gRPC (both ends read it: a replica then offers no
#: socket, a caller asks for none).
ENABLE_ENV = "WEIR_CHANNEL_SOCKET"


def channel_socket_enabled() -> bool:
    """Whether this process serves and uses frame sockets (WEIR_CHANNEL_SOCKET, default on)."""
    return os.environ.get(ENABLE_ENV, "1") != "0"


class FrameSocketClosed(Exception):
    """The connection ended or broke; the message says how."""


def decode(data: bytes) -> pb.Frame:
    """A message read back as the `Frame` it carries; FrameSocketClosed if it is not one
    (the connection is then of no use)."""
    try:
        return pb.Frame.FromString(data)
    except DecodeError as exc:
        raise FrameSocketClosed(f"a message that is no Frame: {exc}") from None


def encode(message: bytes) -> bytes:
    """One message as it travels: its length, then its bytes."""
    return _LENGTH.pack(len(message)) + message


async def read_message(reader: asyncio.StreamReader,
                       limit: int | None = None) -> bytes | None:
    """The next message, or None at a clean end of the stream (between messages);
    FrameSocketClosed for one longer than `limit` (default MAX_MESSAGE_BYTES)."""
    try:
        head = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise FrameSocketClosed("the connection ended inside a message") from None
        return None
    (size,) = _LENGTH.unpack(head)
    limit = MAX_MESSAGE_BYTES if limit is None else limit
    if size > limit:
        raise FrameSocketClosed(f"a message of {size} bytes is over the limit ({limit})")
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise FrameSocketClosed("the connection ended inside a message") from None


class FrameSocketCall:
    """The caller's end of one connection, shaped like the gRPC stream it stands in for
    (`write`, `async for`, `cancel`), so `weir.dataplane.transport` drives either."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        writer.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)

    async def write(self, message: pb.Frame) -> None:
        """Send one message; waits while the replica is behind in reading."""
        if self._writer.is_closing():
            raise FrameSocketClosed("the connection is closed")
        self._writer.write(encode(message.SerializeToString()))
        await self._writer.drain()

    def __aiter__(self) -> AsyncIterator[pb.Frame]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[pb.Frame]:
        while (data := await read_message(self._reader)) is not None:
            yield decode(data)

    def cancel(self) -> None:
        """Close the connection (the replica cancels the calls still running on it)."""
        self._writer.close()


async def connect(host: str, port: int, timeout: float,
                  token: str | None = None) -> FrameSocketCall:
    """Open a frame socket and pass the token check (default token: `cluster_token()`).
    OSError or TimeoutError if the replica cannot be reached; FrameSocketClosed if it
    refused the token."""
    token = auth.cluster_token() if token is None else token
    reader, writer = await within(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(encode(token.encode()))
        answer = await within(reader.read(1), timeout)
    except BaseException:
        writer.close()
        raise
    if answer != ACCEPTED:
        writer.close()
        raise FrameSocketClosed(f"the replica at {host}:{port} refused the cluster token: "
                                "set WEIR_TOKEN to the cluster's token")
    return FrameSocketCall(reader, writer)


ChannelHandler = Callable[[AsyncIterator[pb.Frame]], AsyncIterator[pb.Frame]]


class FrameSocketServer:
    """The replica's end: serves each accepted connection with `handler` (the replica's
    Channel: frames in, frames out)."""

    def __init__(self, handler: ChannelHandler, token: str | None = None) -> None:
        self._handler = handler
        self._expected = (auth.cluster_token() if token is None else token).encode()
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.port = 0

    async def start(self, host: str) -> int:
        """Listen on a free port of `host`; returns the port."""
        self._server = await asyncio.start_server(self._serve, host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            given = await within(read_message(reader, MAX_TOKEN_BYTES),
                                           TOKEN_TIMEOUT_S)
            if given is None or (self._expected
                                 and not hmac.compare_digest(given, self._expected)):
                log.warning("refused a frame socket without the cluster token",
                            peer=str(writer.get_extra_info("peername")))
                return
            writer.write(ACCEPTED)
            writer.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
            await self._relay(reader, writer)
        except (OSError, TimeoutError, FrameSocketClosed) as exc:
            log.info("frame socket ended", reason=f"{type(exc).__name__}: {exc}")
        except asyncio.CancelledError:
            # `stop` gave up waiting: this task is the connection's own, nobody awaits it,
            # and asyncio would log a cancelled one as an error.
            pass
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def frames() -> AsyncIterator[pb.Frame]:
            # A broken connection ends the frames, as a gRPC stream's end does: the handler
            # then cancels the calls still running on it.
            try:
                while (data := await read_message(reader)) is not None:
                    yield decode(data)
            except (OSError, FrameSocketClosed) as exc:
                log.info("frame socket broke", reason=f"{type(exc).__name__}: {exc}")

        replies = self._handler(frames())
        try:
            async for message in replies:
                writer.write(encode(message.SerializeToString()))
                await writer.drain()
        finally:
            await replies.aclose()  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Stop listening and end every connection (their calls are cancelled)."""
        if self._server is not None:
            self._server.close()
        for writer in self._connections.values():
            writer.close()  # its frames end: the handler cancels the calls running on it
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=5)
        for task in list(self._connections):
            task.cancel()
