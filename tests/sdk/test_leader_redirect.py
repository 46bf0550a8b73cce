"""weir.leader_redirect over a real in-process gRPC server: a standby's refusal carries the
leader's address in trailing metadata, read back from sync and asyncio stubs alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from weir.leader_redirect import leader_from, refuse_not_leader
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc


class Standby(pb_grpc.ControllerServicer):
    """Refuses GetStatus and WatchRoutes as a standby naming `leader`; GetConfig fails with
    a FAILED_PRECONDITION that is not a redirect."""

    def __init__(self, leader: str) -> None:
        self.leader = leader

    async def GetStatus(self, request: pb.GetStatusRequest,
                        context: grpc.aio.ServicerContext) -> pb.GetStatusReply:
        await refuse_not_leader(context, self.leader)

    async def WatchRoutes(self, request: pb.WatchRoutesRequest,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[pb.RouteTable]:
        await refuse_not_leader(context, self.leader)
        yield pb.RouteTable()  # never reached; makes this a stream handler

    async def GetConfig(self, request: pb.GetConfigRequest,
                        context: grpc.aio.ServicerContext) -> pb.GetConfigReply:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "leader at 10.0.0.1:1")
        raise AssertionError("unreachable")


def with_standby(leader: str, client: Callable[[str], Awaitable[Any]]) -> Any:
    """Run `client(address)` against a standby naming `leader`; return what it returns."""

    async def main() -> Any:
        server = grpc.aio.server()
        pb_grpc.add_ControllerServicer_to_server(Standby(leader), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            return await client(f"127.0.0.1:{port}")
        finally:
            await server.stop(None)

    return asyncio.run(main())


async def unary_error(address: str) -> grpc.RpcError:
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.ControllerStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)
    return caught.value


@pytest.mark.parametrize("leader", ["127.0.0.1:9501", "[::1]:9502", ""])
def test_asyncio_unary_call_reads_the_leader(leader: str) -> None:
    error = with_standby(leader, unary_error)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert leader_from(error) == leader


def test_asyncio_stream_reads_the_leader() -> None:
    async def client(address: str) -> grpc.RpcError:
        async with grpc.aio.insecure_channel(address) as channel:
            stream = pb_grpc.ControllerStub(channel).WatchRoutes(pb.WatchRoutesRequest(),
                                                                 timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stream:
                    pass
        return caught.value

    assert leader_from(with_standby("127.0.0.1:9501", client)) == "127.0.0.1:9501"


def test_sync_stub_reads_the_leader() -> None:
    # The CLI's admin client uses the synchronous stubs.
    def call(address: str) -> grpc.RpcError:
        with grpc.insecure_channel(address) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                pb_grpc.ControllerStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)
        return caught.value

    async def client(address: str) -> grpc.RpcError:
        return await asyncio.to_thread(call, address)

    assert leader_from(with_standby("127.0.0.1:9501", client)) == "127.0.0.1:9501"
    assert leader_from(with_standby("", client)) == ""


def test_the_message_names_the_leader_for_people() -> None:
    assert "127.0.0.1:9501" in with_standby("127.0.0.1:9501", unary_error).details()
    assert "unknown" in with_standby("", unary_error).details()


def test_other_errors_are_not_redirects() -> None:
    async def client(address: str) -> grpc.RpcError:
        async with grpc.aio.insecure_channel(address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb_grpc.ControllerStub(channel).GetConfig(pb.GetConfigRequest(), timeout=5)
        return caught.value

    # The same code and words as a redirect, but no metadata key: not one.
    assert leader_from(with_standby("127.0.0.1:9501", client)) is None

    async def unreachable(address: str) -> grpc.RpcError:
        return await unary_error("127.0.0.1:1")

    assert leader_from(with_standby("", unreachable)) is None
