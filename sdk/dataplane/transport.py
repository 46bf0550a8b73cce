"""The proxy-to-replica transport: one small interface, so it can change without the router.

Calls travel multiplexed on one long-lived connection per replica, told apart by a call
id: no per-call HTTP/2 stream setup, about half the latency and CPU of a gRPC call each.
The connection is the replica's frame socket (`weir.dataplane.frame_socket`: the same
frames without gRPC's cost per message) where it offers one, else the bidi gRPC stream
`Replica.Channel`. Requests larger than MULTIPLEX_MAX_BYTES take a call of their own, so a
big body never holds up the small ones behind it. Each side sends the frames it wrote in
one event-loop turn as one message (`FrameOutbox`): under load, gRPC's cost is per message.

`ReplicaUnreachable` means the call never reached the replica (safe to retry elsewhere);
`ReplicaCallFailed` means it may have started (never retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Any, Generic, TypeVar

import grpc
import structlog

from weir import auth
from weir.cancellation import within
from weir.dataplane.frame_socket import (
    MAX_MESSAGE_BYTES,
    FrameSocketCall,
    FrameSocketClosed,
    channel_socket_enabled,
)
from weir.dataplane.frame_socket import connect as frame_socket_connect
from weir.dataplane.request_body import RequestBody
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc

log = structlog.get_logger("weir.dataplane.transport")

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 0),
]
CONNECT_TIMEOUT_S = 1.0
#: Requests larger than this get a gRPC call of their own instead of the shared stream.
MULTIPLEX_MAX_BYTES = 1024 * 1024


class ReplicaUnreachable(Exception):
    """The replica could not be reached; the call was never sent."""


class ReplicaCallFailed(Exception):
    """The call failed after it may have reached the replica (it died, or the link broke)."""


_BROKEN = object()
T = TypeVar("T")


class FrameOutbox:
    """Frames waiting to go out on a `Replica.Channel` stream, both ways: all the frames added
    since the last `take` travel as one message, the batch of one `Frame`. While a write is
    under way the next frames gather, so the busier the stream, the fewer the messages."""

    def __init__(self) -> None:
        self._message = pb.Frame()
        self._ready = asyncio.Event()
        self._closed = False

    def add(self, call_id: int, **fields: Any) -> None:
        """Queue one frame (the `Frame` fields besides `call_id`)."""
        self._message.batch.add(call_id=call_id, **fields)
        self._ready.set()

    def close(self) -> None:
        """No more frames: `take` returns what is left, then None."""
        self._closed = True
        self._ready.set()

    async def take(self) -> pb.Frame | None:
        """The frames added since the last take, as one message (waits for at least one);
        None once closed with nothing left."""
        while not self._message.batch:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        message, self._message = self._message, pb.Frame()
        return message


class CallInbox(Generic[T]):
    """The items of one call as they arrive (its frames here; a replica's ASGI messages in
    `weir.replica.server`): an asyncio.Queue costs more to make (an Event, two deques) than
    the call's whole trip, and a call has one waiter at most."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: deque[T] = deque()
        self.waiter: asyncio.Future[None] | None = None

    def put(self, item: T) -> None:
        self.items.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> T:
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.items.popleft()


#: What breaks a channel: its gRPC stream failing, or its frame socket.
_CHANNEL_ERRORS = (grpc.aio.AioRpcError, OSError, FrameSocketClosed)


class _Multiplexer:
    """One connection to one replica (a frame socket, or a `Replica.Channel` stream: `call`
    writes messages, iterates them, cancels), carrying many calls."""

    def __init__(self, call: Any, address: str) -> None:
        self.address = address
        self.call = call
        self.ids = itertools.count(1)
        self.pending: dict[int, CallInbox[object]] = {}
        #: Calls that asked to hear of their last frame as soon as it is read (`open`).
        self.ending: dict[int, Callable[[pb.CallReply], None]] = {}
        #: Messages read but not yet handed to their calls' inboxes (`_read`), in order.
        self._undelivered: list[pb.Frame] = []
        self.outbox = FrameOutbox()
        self.broken: str | None = None
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._write())]

    async def _write(self) -> None:
        try:
            while (message := await self.outbox.take()) is not None:
                await self.call.write(message)
        except (*_CHANNEL_ERRORS, asyncio.InvalidStateError) as exc:
            self._break(f"stream to replica at {self.address} broke: {exc}")

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for message in self.call:
                ended = False
                if self.ending:
                    for frame in message.batch:
                        if frame.last and (on_last := self.ending.pop(frame.call_id, None)):
                            on_last(frame.reply)
                            ended = True
                if ended or self._undelivered:
                    # `on_last` freed router slots, which went to queued calls: their tasks
                    # run first on the next turn and put their frames in the outbox. The
                    # replies reach their calls a turn later, so that the next calls go out
                    # before this process works on the replies (the proxy's HTTP
                    # responses), rather than the replica waiting for that work.
                    if not self._undelivered:
                        loop.call_soon(self._deliver)
                    self._undelivered.append(message)
                else:
                    self._deliver_one(message)
            self._break(f"replica at {self.address} closed the stream")
        except _CHANNEL_ERRORS as exc:
            reason = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            self._break(f"stream to replica at {self.address} failed: {reason}")

    def _deliver_one(self, message: pb.Frame) -> None:
        for frame in message.batch:
            inbox = self.pending.get(frame.call_id)
            if inbox is not None:
                inbox.put(frame)

    def _deliver(self) -> None:
        undelivered, self._undelivered = self._undelivered, []
        for message in undelivered:
            self._deliver_one(message)

    def _break(self, reason: str) -> None:
        self._deliver()  # the replies read before the break come first
        if self.broken is None:
            self.broken = reason
            for inbox in self.pending.values():
                inbox.put(_BROKEN)

    def open(self, request: pb.CallRequest, stream: bool,
             on_last: Callable[[pb.CallReply], None] | None = None,
             ) -> tuple[int, CallInbox[object]]:
        """Send a call; returns its id and the inbox its frames arrive in. `on_last` is
        given the call's last reply as soon as it is read, before the inbox has it."""
        call_id = next(self.ids)
        inbox: CallInbox[object] = CallInbox()
        self.pending[call_id] = inbox
        if on_last is not None:
            self.ending[call_id] = on_last
        self.outbox.add(call_id, request=request, stream=stream)
        return call_id, inbox

    def close_call(self, call_id: int, *, cancel: bool) -> None:
        """Forget a call; with `cancel`, tell the replica to stop its work."""
        self.pending.pop(call_id, None)
        self.ending.pop(call_id, None)
        if cancel and self.broken is None:
            self.outbox.add(call_id, cancel=True)

    async def next_frame(self, inbox: CallInbox[object], timeout: float | None) -> pb.Frame:
        """The call's next frame; ReplicaCallFailed if the stream broke."""
        item = await (inbox.get() if timeout is None else within(inbox.get(), timeout))
        if item is _BROKEN:
            raise ReplicaCallFailed(self.broken or "stream broke")
        assert isinstance(item, pb.Frame)
        return item

    async def close(self) -> None:
        """Close the stream and fail its calls."""
        self._break(f"stream to replica at {self.address} closed")
        self.outbox.close()
        self.call.cancel()
        for task in self._tasks:
            task.cancel()


class ReplicaTransport:
    """Calls replicas by address. Bound to the event loop it is first used on."""

    def __init__(self) -> None:
        self._stubs: dict[str, tuple[grpc.aio.Channel, pb_grpc.ReplicaStub]] = {}
        self._muxes: dict[str, _Multiplexer] = {}
        #: Replicas whose frame socket is off, too old to have one, or out of reach.
        self._without_socket: set[str] = set()
        self._use_sockets = channel_socket_enabled()

    def _stub(self, address: str) -> tuple[grpc.aio.Channel, pb_grpc.ReplicaStub]:
        entry = self._stubs.get(address)
        if entry is None:
            channel = auth.channel(address, options=CHANNEL_OPTIONS)
            entry = (channel, pb_grpc.ReplicaStub(channel))
            self._stubs[address] = entry
        return entry

    async def _ready(self, address: str) -> pb_grpc.ReplicaStub:
        channel, stub = self._stub(address)
        if channel.get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY:
            try:
                await within(channel.channel_ready(), CONNECT_TIMEOUT_S)
            except (TimeoutError, grpc.aio.AioRpcError) as exc:
                await self.forget(address)
                raise ReplicaUnreachable(f"replica at {address} is unreachable") from exc
        return stub

    async def stub(self, address: str) -> pb_grpc.ReplicaStub:
        """The replica's stub once its channel is ready, for calls that are not routed
        (e.g. the gRPC ingress asking which services a replica serves);
        ReplicaUnreachable if it cannot be reached."""
        return await self._ready(address)

    async def _mux(self, address: str) -> _Multiplexer:
        mux = self._muxes.get(address)
        if mux is not None and mux.broken is None:
            return mux
        if mux is not None:
            await mux.close()
        stub = await self._ready(address)
        call = await self._frame_socket(address, stub)
        mux = self._muxes[address] = _Multiplexer(
            call if call is not None else stub.Channel(), address)
        return mux

    async def _frame_socket(self, address: str,
                            stub: pb_grpc.ReplicaStub) -> FrameSocketCall | None:
        """A frame socket to the replica, or None to use its gRPC stream: a replica that
        offers none, or whose socket fails to open, is not asked again."""
        if not self._use_sockets or address in self._without_socket:
            return None
        try:
            reply = await stub.ChannelSocket(pb.ChannelSocketRequest(),
                                             timeout=CONNECT_TIMEOUT_S)
            if reply.port:
                host = address.rpartition(":")[0].strip("[]")
                return await frame_socket_connect(host, reply.port, CONNECT_TIMEOUT_S)
        except (*_CHANNEL_ERRORS, TimeoutError) as exc:
            log.info("no frame socket to the replica; using its gRPC stream", address=address,
                     reason=f"{type(exc).__name__}: {exc}")
        self._without_socket.add(address)
        return None

    async def call(self, address: str, request: pb.CallRequest,
                   timeout: float | None) -> pb.CallReply:
        """One unary call."""
        if request.ByteSize() > MULTIPLEX_MAX_BYTES:
            stub = await self._ready(address)
            try:
                reply: pb.CallReply = await stub.Call(request, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                raise _failure(exc, address) from exc
            return reply
        mux = await self._mux(address)
        call_id, inbox = mux.open(request, stream=False)
        done = False
        try:
            frame = await mux.next_frame(inbox, timeout)
            done = True
            return frame.reply
        except TimeoutError:
            raise TimeoutError(f"call to replica at {address} timed out") from None
        finally:
            mux.close_call(call_id, cancel=not done)

    async def stream(self, address: str, request: pb.CallRequest, timeout: float | None,
                     body: RequestBody | None = None,
                     on_last: Callable[[pb.CallReply], None] | None = None,
                     ) -> AsyncGenerator[pb.CallReply, None]:
        """A streaming call; yields reply messages as they arrive. A `body` still arriving
        is sealed into `request` here, as late as possible; if more of it is to come, its
        chunks follow on the call once the replica admitted it. `on_last`: given the last
        reply as soon as it is read (on the replica's channel only), before it is yielded."""
        if body is not None and body.seal():
            own = self._body_stream(address, request, body, timeout)
        elif request.ByteSize() > MULTIPLEX_MAX_BYTES:
            own = self._own_stream(address, request, timeout)
        else:
            own = None
        if own is not None:
            # Closed with this one, so that a caller stopping early ends the call at once.
            async with contextlib.aclosing(own):
                async for reply in own:
                    yield reply
            return
        mux = await self._mux(address)
        call_id, inbox = mux.open(request, stream=True, on_last=on_last)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        done = False
        try:
            while True:
                left = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    frame = await mux.next_frame(inbox, left)
                except TimeoutError:
                    raise TimeoutError(f"call to replica at {address} timed out") from None
                # Done before the last reply is handed on: a caller that stops there (the
                # response is whole) must not cancel a call that ended.
                done = frame.last
                if frame.HasField("reply"):
                    yield frame.reply
                if done:
                    return
        finally:
            mux.close_call(call_id, cancel=not done)

    async def _own_stream(self, address: str, request: pb.CallRequest,
                          timeout: float | None) -> AsyncGenerator[pb.CallReply, None]:
        stub = await self._ready(address)
        call = stub.CallStream(request, timeout=timeout)
        try:
            async for reply in call:
                yield reply
        except grpc.aio.AioRpcError as exc:
            raise _failure(exc, address) from exc
        finally:
            call.cancel()

    async def _body_stream(self, address: str, request: pb.CallRequest, body: RequestBody,
                           timeout: float | None) -> AsyncGenerator[pb.CallReply, None]:
        stub = await self._ready(address)
        call = stub.CallBodyStream(timeout=timeout)
        sender: asyncio.Task[None] | None = None
        try:
            await call.write(pb.CallPart(request=request))
            async for reply in call:
                if reply.admitted and sender is None:
                    sender = asyncio.get_running_loop().create_task(_send_body(call, body))
                yield reply
                if not reply.admitted and not reply.more_body:
                    # The response is whole. A handler that answered before reading the
                    # whole body ends its side while this one may still be writing; gRPC
                    # then ends the call INTERNAL, which is no failure of the call.
                    return
        except grpc.aio.AioRpcError as exc:
            raise _failure(exc, address) from exc
        finally:
            if sender is not None:
                sender.cancel()
            call.cancel()

    async def websocket(self, address: str) -> grpc.aio.StreamStreamCall:
        """Open a WebSocket stream to a replica (its own HTTP/2 stream, for as long as the
        WebSocket lives). ReplicaUnreachable if the replica cannot be reached."""
        stub = await self._ready(address)
        return stub.WebSocket()

    async def forget(self, address: str) -> None:
        """Close the channel to a replica that is gone."""
        mux = self._muxes.pop(address, None)
        if mux is not None:
            await mux.close()
        self._without_socket.discard(address)
        entry = self._stubs.pop(address, None)
        if entry is not None:
            await entry[0].close()

    async def close(self) -> None:
        """Close every channel."""
        for address in list(self._stubs):
            await self.forget(address)


async def _send_body(call: grpc.aio.StreamStreamCall, body: RequestBody) -> None:
    """Write the rest of the body to an admitted call as it arrives from the client."""
    try:
        async for data, last in body.rest():
            await call.write(pb.CallPart(body=pb.BodyChunk(data=data, last=last)))
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        # The call ended first (answered without reading the whole body, or failed): the
        # reading side reports how it ended.
        return


def _failure(exc: grpc.aio.AioRpcError, address: str) -> Exception:
    """The transport's error for a failed call: TimeoutError past the deadline, else
    ReplicaCallFailed (the call may have started, so it is not retried)."""
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TimeoutError(f"call to replica at {address} timed out")
    return ReplicaCallFailed(
        f"call to replica at {address} failed: {exc.code().name} {exc.details()}")
