"""The proxy-to-replica transport: one small interface, so it can change without the router.

Today: one grpc.aio channel per replica address, unary calls and server-streaming calls.
`ReplicaUnreachable` means the call never reached the replica (safe to retry elsewhere);
`ReplicaCallFailed` means it may have started (never retried).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc

#: Bodies up to the proxy's limit (100 MB by default) plus headroom.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 0),
]
CONNECT_TIMEOUT_S = 1.0


class ReplicaUnreachable(Exception):
    """The replica could not be reached; the call was never sent."""


class ReplicaCallFailed(Exception):
    """The call failed after it may have reached the replica (it died, or the link broke)."""


class ReplicaTransport:
    """Calls replicas by address. Bound to the event loop it is first used on."""

    def __init__(self) -> None:
        self._stubs: dict[str, tuple[grpc.aio.Channel, pb_grpc.ReplicaStub]] = {}

    def _stub(self, address: str) -> tuple[grpc.aio.Channel, pb_grpc.ReplicaStub]:
        entry = self._stubs.get(address)
        if entry is None:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            entry = (channel, pb_grpc.ReplicaStub(channel))
            self._stubs[address] = entry
        return entry

    async def _ready(self, address: str) -> pb_grpc.ReplicaStub:
        channel, stub = self._stub(address)
        if channel.get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY:
            try:
                await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT_S)
            except (TimeoutError, grpc.aio.AioRpcError) as exc:
                await self.forget(address)
                raise ReplicaUnreachable(f"replica at {address} is unreachable") from exc
        return stub

    async def call(self, address: str, request: pb.CallRequest,
                   timeout: float | None) -> pb.CallReply:
        """One unary call."""
        stub = await self._ready(address)
        try:
            reply: pb.CallReply = await stub.Call(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _failure(exc, address) from exc
        return reply

    async def stream(self, address: str, request: pb.CallRequest,
                     timeout: float | None) -> AsyncIterator[pb.CallReply]:
        """A server-streaming call; yields reply messages as they arrive."""
        stub = await self._ready(address)
        call = stub.CallStream(request, timeout=timeout)
        try:
            async for reply in call:
                yield reply
        except grpc.aio.AioRpcError as exc:
            raise _failure(exc, address) from exc
        finally:
            call.cancel()

    async def forget(self, address: str) -> None:
        """Close the channel to a replica that is gone."""
        entry = self._stubs.pop(address, None)
        if entry is not None:
            await entry[0].close()

    async def close(self) -> None:
        """Close every channel."""
        for address in list(self._stubs):
            await self.forget(address)


def _failure(exc: grpc.aio.AioRpcError, address: str) -> Exception:
    """The transport's error for a failed call: TimeoutError past the deadline, else
    ReplicaCallFailed (the call may have started, so it is not retried)."""
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TimeoutError(f"call to replica at {address} timed out")
    return ReplicaCallFailed(
        f"call to replica at {address} failed: {exc.code().name} {exc.details()}")
