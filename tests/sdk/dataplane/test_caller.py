"""weir.dataplane.caller's retry rule, the same for unary and streaming calls: a call goes to
another replica only when it never started (refused, unreachable), never after it started.

Everything is real gRPC in this process: a controller that streams one route table, and
replicas that speak the multiplexed `Replica.Channel` and behave as told.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from weir.dataplane.caller import DataPlane
from weir.dataplane.route_table import LeaderLocator
from weir.dataplane.transport import ReplicaCallFailed
from weir.exceptions import RequestTimeoutError
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc

APP, DEPLOYMENT = "app", "dep"


class Replica(pb_grpc.ReplicaServicer):
    """Answers with its name, after refusing its first `refusals` calls; `fail` ends the
    stream once a call arrived (the replica died under it); `hang` never answers."""

    def __init__(self, name: str, *, refusals: int = 0, fail: bool = False,
                 hang: bool = False) -> None:
        self.name = name
        self.refusals = refusals
        self.fail = fail
        self.hang = hang
        self.calls = 0

    async def Channel(self, frames: AsyncIterator[pb.Frame],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Frame]:
        async for message in frames:
            for frame in message.batch:
                if frame.cancel:
                    continue
                self.calls += 1
                if self.fail:
                    await context.abort(grpc.StatusCode.INTERNAL, "replica died mid-call")
                if self.hang:
                    continue
                if self.calls <= self.refusals:
                    yield batch(pb.Frame(call_id=frame.call_id, last=True,
                                         reply=pb.CallReply(outcome=pb.REJECTED, ongoing=1)))
                    continue
                if frame.stream:
                    yield batch(pb.Frame(call_id=frame.call_id,
                                         reply=pb.CallReply(body=b"part ", more_body=True)))
                yield batch(pb.Frame(call_id=frame.call_id, last=True,
                                     reply=pb.CallReply(body=self.name.encode())))


def batch(*frames: pb.Frame) -> pb.Frame:
    """Frames as the channel carries them: the batch of one message."""
    return pb.Frame(batch=frames)


class Controller(pb_grpc.ControllerServicer):
    """Streams one route table naming `replicas` (name: address, reported load), then holds
    the stream open."""

    def __init__(self, replicas: dict[str, tuple[str, int]]) -> None:
        self.table = pb.RouteTable(version=1, deployments=[pb.DeploymentTargets(
            app=APP, deployment=DEPLOYMENT, max_ongoing_requests=5, max_queued_requests=-1,
            replicas=[pb.ReplicaTarget(replica_id=name, address=address, ongoing=load)
                      for name, (address, load) in replicas.items()])])

    async def WatchRoutes(self, request: pb.WatchRoutesRequest,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[pb.RouteTable]:
        yield self.table
        await asyncio.Event().wait()


async def serve(servicer: Any, add: Callable[[Any, grpc.aio.Server], None]
                ) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def with_plane(replicas: list[Replica], use: Callable[[DataPlane], Awaitable[Any]],
               unreachable: bool = False) -> Any:
    """Run `use(plane)` with a data plane routing to `replicas` (plus, if `unreachable`, one
    address where nothing listens, reported idle while the others report a load, so that
    the first call tries it first)."""

    async def main() -> Any:
        servers = []
        addresses = {}
        for replica in replicas:
            server, address = await serve(replica, pb_grpc.add_ReplicaServicer_to_server)
            addresses[replica.name] = (address, 3 if unreachable else 0)
            servers.append(server)
        if unreachable:
            # A port that was just free: nothing listens there.
            gone, address = await serve(Replica("gone"), pb_grpc.add_ReplicaServicer_to_server)
            await gone.stop(None)
            addresses["gone"] = (address, 0)
        controller, address = await serve(Controller(addresses),
                                           pb_grpc.add_ControllerServicer_to_server)
        servers.append(controller)
        plane = DataPlane(LeaderLocator(controllers=[address]), "test")
        plane.start()
        try:
            return await use(plane)
        finally:
            await plane.close()
            for server in servers:
                await server.stop(None)

    return asyncio.run(main())


async def unary(plane: DataPlane, timeout: float = 10.0) -> bytes:
    reply = await plane.call(APP, DEPLOYMENT, pb.CallRequest(request_id="r"),
                             time.monotonic() + timeout)
    return reply.body


async def streamed(plane: DataPlane, timeout: float = 10.0) -> bytes:
    replies = plane.stream(APP, DEPLOYMENT, pb.CallRequest(request_id="r"),
                           time.monotonic() + timeout)
    return b"".join([reply.body async for reply in replies])


CALLS = {"call": (unary, b"ok"), "stream": (streamed, b"part ok")}


@pytest.mark.parametrize("kind", CALLS)
def test_a_refused_call_is_sent_again(kind: str) -> None:
    send, expected = CALLS[kind]
    replica = Replica("ok", refusals=1)
    assert with_plane([replica], send) == expected
    assert replica.calls == 2


@pytest.mark.parametrize("kind", CALLS)
def test_a_started_call_is_never_sent_again(kind: str) -> None:
    send, _ = CALLS[kind]
    replica = Replica("dies", fail=True)
    with pytest.raises(ReplicaCallFailed):
        with_plane([replica], send)
    assert replica.calls == 1


@pytest.mark.parametrize("kind", CALLS)
def test_an_unreachable_replica_is_passed_over(kind: str) -> None:
    send, expected = CALLS[kind]
    replica = Replica("ok")

    async def several(plane: DataPlane) -> list[bytes]:
        # The first call tries the unreachable replica first (it looks idle); later ones
        # pick at random among the two: each must end on the one that answers.
        return [await send(plane) for _ in range(3)]

    assert with_plane([replica], several, unreachable=True) == [expected] * 3
    assert replica.calls == 3


@pytest.mark.parametrize("kind", CALLS)
def test_the_deadline_ends_a_call_that_never_answers(kind: str) -> None:
    send, _ = CALLS[kind]
    replica = Replica("silent", hang=True)

    async def late(plane: DataPlane) -> bytes:
        await plane.wait_known(APP, DEPLOYMENT, time.monotonic() + 10)
        return await send(plane, 0.3)

    with pytest.raises(RequestTimeoutError):
        with_plane([replica], late)
    assert replica.calls == 1


@pytest.mark.parametrize("kind", CALLS)
@pytest.mark.parametrize("how", ["answered", "refused then answered", "failed"])
def test_every_try_gives_its_replica_slot_back(kind: str, how: str) -> None:
    send, _ = CALLS[kind]
    replica = Replica("r", refusals=1 if how.startswith("refused") else 0,
                      fail=how == "failed")

    async def then_in_flight(plane: DataPlane) -> list[int]:
        try:
            await send(plane)
        except ReplicaCallFailed:
            pass
        return [slot.in_flight for slot in plane.router(APP, DEPLOYMENT)._slots.values()]

    assert with_plane([replica], then_in_flight) == [0]


def test_a_streamed_call_frees_its_slot_as_its_last_reply_is_read() -> None:
    # Before the caller sees that reply: a queued call goes out before the caller's work on
    # it (the proxy's HTTP response), instead of the replica waiting for that work.
    async def in_flight_at_each_reply(plane: DataPlane) -> list[int]:
        router = plane.router(APP, DEPLOYMENT)
        replies = plane.stream(APP, DEPLOYMENT, pb.CallRequest(request_id="r"),
                               time.monotonic() + 10)
        return [sum(slot.in_flight for slot in router._slots.values())
                async for _ in replies]

    # (The first reply may be read in the same turn as the last, so its count may be 0.)
    assert with_plane([Replica("r")], in_flight_at_each_reply)[1:] == [0]


def test_a_table_updates_only_the_routers_of_deployments_it_changed() -> None:
    from weir.dataplane.route_table import RouteTable

    async def scenario() -> None:
        plane = DataPlane(LeaderLocator(controllers=["127.0.0.1:1"]), "test")
        a = pb.DeploymentTargets(app="x", deployment="A", max_ongoing_requests=5,
                                 replicas=[pb.ReplicaTarget(replica_id="a1", address="h:1")])
        b = pb.DeploymentTargets(app="x", deployment="B", max_ongoing_requests=5,
                                 replicas=[pb.ReplicaTarget(replica_id="b1", address="h:2")])
        plane._on_table(RouteTable(version=1, deployments={("x", "A"): a, ("x", "B"): b}))
        updated: list[str] = []
        for key, router in plane.routers.items():
            original = router.update

            def spy(*args: Any, _key: tuple[str, str] = key, _original: Any = original,
                    **kwargs: Any) -> None:
                updated.append(_key[1])
                _original(*args, **kwargs)

            router.update = spy  # type: ignore[method-assign]
        b2 = pb.DeploymentTargets()
        b2.CopyFrom(b)
        b2.replicas[0].ongoing = 3
        # A delta: A is the same object as before, B a new one.
        plane._on_table(RouteTable(version=2, deployments={("x", "A"): a, ("x", "B"): b2}))
        assert updated == ["B"]
        await plane.close()

    asyncio.run(scenario())
