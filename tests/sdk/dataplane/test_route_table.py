"""Route prefix matching, and following the leader for the route table over real gRPC."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import grpc

from weir.dataplane.route_table import (
    LeaderLocator,
    RouteEntry,
    RouteTable,
    RouteTableSubscriber,
    match_route,
)
from weir.leader_redirect import refuse_not_leader
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc

ROUTES = [RouteEntry("/", "root", "A"), RouteEntry("/api", "api", "B"),
          RouteEntry("/api/v2", "v2", "C")]


def test_longest_prefix_on_segment_boundary() -> None:
    assert match_route(ROUTES, "/api/v2/x").app == "v2"  # type: ignore[union-attr]
    assert match_route(ROUTES, "/api/v2").app == "v2"  # type: ignore[union-attr]
    assert match_route(ROUTES, "/api/v3").app == "api"  # type: ignore[union-attr]
    assert match_route(ROUTES, "/apis").app == "root"  # type: ignore[union-attr]
    assert match_route(ROUTES, "/").app == "root"  # type: ignore[union-attr]


def test_no_match_without_root() -> None:
    assert match_route(ROUTES[1:], "/other") is None


class Controller(pb_grpc.ControllerServicer):
    """Streams a route table of `version` as the leader (`leader is None`), else redirects
    to `leader`."""

    def __init__(self, version: int, leader: str | None = None) -> None:
        self.version = version
        self.leader = leader
        self.asked = 0

    async def WatchRoutes(self, request: pb.WatchRoutesRequest,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[pb.RouteTable]:
        self.asked += 1
        if self.leader is not None:
            await refuse_not_leader(context, self.leader)
        yield pb.RouteTable(version=self.version)
        await asyncio.Event().wait()


async def serve(controller: Controller) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    pb_grpc.add_ControllerServicer_to_server(controller, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def test_without_etcd_a_redirect_is_followed_to_the_leader() -> None:
    async def main() -> None:
        leader_server, leader = await serve(Controller(version=7))
        standby = Controller(version=1, leader="")  # no leader known yet
        standby_server, standby_address = await serve(standby)
        tables: list[RouteTable] = []
        locator = LeaderLocator(controllers=[standby_address])
        subscriber = RouteTableSubscriber(locator, "test", tables.append)
        subscriber.start()
        try:
            # While no leader is known it keeps asking (with a backoff, never giving up).
            await poll(lambda: standby.asked >= 3)
            assert tables == []
            standby.leader = leader  # elected: the standby now names it
            await poll(lambda: bool(tables))
            assert [t.version for t in tables] == [7]
            assert locator.controllers == [leader]
        finally:
            await subscriber.stop()
            await standby_server.stop(None)
            await leader_server.stop(None)

    asyncio.run(main())


async def poll(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `condition()` holds; fail past `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
