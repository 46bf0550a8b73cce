"""A replica session that etcd could not take ends with UNAVAILABLE (the replica registers
again), not with an exception escaping to gRPC as UNKNOWN."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from weir.controller.admin import AdminService
from weir.etcd.memory_store import MemoryStore
from weir.etcd.store import StoreUnavailableError
from weir.protos import weir_pb2 as pb


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class Context:
    async def abort(self, code: grpc.StatusCode, details: str = "",
                    trailing_metadata: object = ()) -> None:
        raise Aborted(code, details)


class RegistrationFails:
    """A leader whose store refuses the registration's write."""

    async def session(self, reports: AsyncIterator[pb.ReplicaReport]
                      ) -> AsyncIterator[pb.ReplicaCommand]:
        async for _ in reports:
            raise StoreUnavailableError("etcd timed out")
        yield pb.ReplicaCommand()  # pragma: no cover


async def _reports() -> AsyncIterator[pb.ReplicaReport]:
    yield pb.ReplicaReport(replica_id="r1")


def test_session_whose_registration_etcd_refuses_ends_unavailable() -> None:
    leader: Any = RegistrationFails()
    service = AdminService(MemoryStore(), lambda: leader, lambda: "", lambda: None)

    async def run() -> None:
        async for _ in service.ReplicaSession(_reports(), Context()):  # type: ignore[arg-type]
            pass

    with pytest.raises(Aborted) as raised:
        asyncio.run(run())
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert "etcd timed out" in str(raised.value)


class Streams:
    """A leader that sends one command to every session."""

    async def session(self, reports: AsyncIterator[pb.ReplicaReport]
                      ) -> AsyncIterator[pb.ReplicaCommand]:
        yield pb.ReplicaCommand()


def test_a_session_that_comes_while_the_term_starts_waits_for_it() -> None:
    # The leader key changes as the election is won; replicas and proxies that watch it call
    # at once. Refused ("not the leader"), they came back after a backoff: at a cluster's
    # start the proxy had no route table for up to a second after the replica ran.
    started: asyncio.Event | None = None
    leader: Any = Streams()

    async def starting_leader() -> Any:
        assert started is not None
        await started.wait()
        return leader

    current: list[Any] = [None]
    service = AdminService(MemoryStore(), lambda: current[0], lambda: "127.0.0.1:1",
                           lambda: None, starting_leader)

    async def run() -> list[pb.ReplicaCommand]:
        nonlocal started
        started = asyncio.Event()
        session = asyncio.ensure_future(_collect(service))
        await asyncio.sleep(0.05)
        assert not session.done()  # waiting, not refused
        current[0] = leader
        started.set()
        return await asyncio.wait_for(session, 5)

    assert len(asyncio.run(run())) == 1


def test_a_standby_still_refuses_at_once() -> None:
    async def not_starting() -> Any:
        return None

    service = AdminService(MemoryStore(), lambda: None, lambda: "10.0.0.9:9500",
                           lambda: None, not_starting)
    with pytest.raises(Aborted) as raised:
        asyncio.run(_collect(service))
    assert raised.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "leader at 10.0.0.9:9500" in str(raised.value)


async def _collect(service: AdminService) -> list[pb.ReplicaCommand]:
    return [c async for c in service.ReplicaSession(_reports(), Context())]  # type: ignore[arg-type]
