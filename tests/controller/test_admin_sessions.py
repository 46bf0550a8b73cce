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
    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
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
