"""weir.cli.admin_client follows a standby's redirect to the leader, over real gRPC: in-process
controllers that lead or stand by, called by the synchronous client from a thread."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from weir.cli.admin_client import AdminClient
from weir.exceptions import ClusterError
from weir.leader_redirect import refuse_not_leader
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc


class Controller(pb_grpc.ControllerServicer):
    """Answers GetStatus as the leader (`leader is None`), else redirects to `leader`."""

    def __init__(self, name: str, leader: str | None = None) -> None:
        self.name = name
        self.leader = leader
        self.asked = 0

    async def GetStatus(self, request: pb.GetStatusRequest,
                        context: grpc.aio.ServicerContext) -> pb.GetStatusReply:
        self.asked += 1
        if self.leader is not None:
            await refuse_not_leader(context, self.leader)
        return pb.GetStatusReply(status_json=json.dumps({"answered_by": self.name}))


def with_controllers(count: int,
                     use: Callable[[list[Controller], list[str]], Any]) -> Any:
    """Serve `count` controllers; `use(controllers, addresses)` runs in a thread (the client
    is synchronous) and may set each one's `leader` before calling."""

    async def main() -> Any:
        controllers = [Controller(f"c{i}") for i in range(count)]
        servers, addresses = [], []
        for controller in controllers:
            server = grpc.aio.server()
            pb_grpc.add_ControllerServicer_to_server(controller, server)
            addresses.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
            await server.start()
            servers.append(server)
        try:
            return await asyncio.to_thread(use, controllers, addresses)
        finally:
            for server in servers:
                await server.stop(None)

    return asyncio.run(main())


def test_a_standby_redirects_to_the_leader() -> None:
    def use(controllers: list[Controller], addresses: list[str]) -> dict[str, Any]:
        controllers[0].leader = addresses[1]  # c0 stands by; c1 leads
        return AdminClient(addresses[0], timeout=5).get_status()

    assert with_controllers(2, use) == {"answered_by": "c1"}


def test_no_known_leader_waits_then_says_so() -> None:
    def use(controllers: list[Controller], addresses: list[str]) -> int:
        controllers[0].leader = ""  # an election is under way
        client = AdminClient(addresses[0], timeout=5, leader_wait_s=0.5)
        with pytest.raises(ClusterError, match="has no leader"):
            client.get_status()
        return controllers[0].asked

    assert with_controllers(1, use) > 1  # it asked again while waiting


def test_a_leader_elected_while_waiting_answers() -> None:
    def use(controllers: list[Controller], addresses: list[str]) -> dict[str, Any]:
        controllers[0].leader = ""

        def elected() -> None:
            controllers[0].leader = addresses[1]

        # The client's retries come from its own thread; elect once it has asked once.
        timer = threading.Timer(0.3, elected)
        timer.start()
        try:
            return AdminClient(addresses[0], timeout=5, leader_wait_s=5).get_status()
        finally:
            timer.cancel()

    assert with_controllers(2, use) == {"answered_by": "c1"}


def test_standbys_naming_each_other_do_not_loop_for_ever() -> None:
    def use(controllers: list[Controller], addresses: list[str]) -> None:
        controllers[0].leader = addresses[1]
        controllers[1].leader = addresses[0]
        with pytest.raises(ClusterError, match="has no leader"):
            AdminClient(addresses[0], timeout=5, leader_wait_s=0.3).get_status()

    with_controllers(2, use)
