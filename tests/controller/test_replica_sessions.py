"""Replica sessions: a stream that hangs up before its first report ends quietly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from weir.controller.replica_sessions import ReplicaSessions
from weir.protos import weir_pb2 as pb


async def _no_reports() -> AsyncIterator[pb.ReplicaReport]:
    return
    yield  # an async generator that ends at once


def test_a_stream_closed_before_registering_yields_nothing() -> None:
    async def scenario() -> list[pb.ReplicaCommand]:
        sessions = ReplicaSessions(asyncio.Event(), lambda replica_id, changed: None)

        async def admit(first: pb.ReplicaReport) -> list[pb.ReplicaCommand]:
            raise AssertionError("nothing registered, nothing to admit")

        out = [c async for c in sessions.hold(_no_reports(), admit)]
        assert not sessions.sessions
        return out

    assert asyncio.run(scenario()) == []
