"""A replica's session over a real gRPC stream on loopback, to a controller that records
what arrives: when a health check's answer goes out, alone or riding on a load report."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.polling import loopback_server, until
from weir.dataplane.route_table import LeaderLocator
from weir.health_promise import answer_hold
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc
from weir.replica import session as session_module
from weir.replica.session import ControllerSession


class Recorder(pb_grpc.ControllerServicer):
    """Takes a replica's registration and records each report with when it came."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, pb.ReplicaReport]] = []

    async def ReplicaSession(self, request_iterator: AsyncIterator[pb.ReplicaReport],
                             context: Any) -> AsyncIterator[pb.ReplicaCommand]:
        first = True
        async for report in request_iterator:
            self.reports.append((time.monotonic(), report))
            if first:
                first = False
                yield pb.ReplicaCommand(kind=pb.REGISTERED)


def test_a_healthy_answer_waits_out_its_hold_or_rides_on_a_load_report(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Wakes far more often than the hold: a wake must not send a held answer by itself.
    monkeypatch.setattr(session_module, "HEARTBEAT_S", 0.02)
    period = 0.6
    hold = answer_hold(period)

    async def scenario() -> None:
        recorder = Recorder()
        server, port = await loopback_server(pb_grpc.add_ControllerServicer_to_server,
                                             recorder)
        load = [0]
        checks: list[float] = []

        async def check() -> pb.HealthCheckReply:
            checks.append(time.monotonic())
            return pb.HealthCheckReply(healthy=True)

        async def on_command(command: pb.ReplicaCommand) -> None:
            pass

        session = ControllerSession(
            "r1", "127.0.0.1:1", LeaderLocator(controllers=[f"127.0.0.1:{port}"]),
            lambda: pb.ReplicaReport(state=pb.RUNNING, ongoing=load[0]), on_command,
            check_health=check)
        task = asyncio.get_running_loop().create_task(session.run())
        try:
            await until(lambda: session.registered.is_set())
            session.check_every(period, 5.0)

            def answers() -> list[tuple[float, pb.ReplicaReport]]:
                return [(t, r) for t, r in recorder.reports if r.HasField("health_check")]

            # Nothing else to report: the first answer goes alone, once its hold is over.
            await until(lambda: len(answers()) == 1)
            sent, alone = answers()[0]
            assert sent - checks[0] >= hold - 0.01, (sent - checks[0], hold)
            assert alone.ongoing == 0 and alone.health_check.check_id == 1
            # The second: a load change soon after the check takes the answer with it, and
            # nothing goes out for the answer alone afterwards.
            await until(lambda: len(checks) == 2)
            load[0] = 3
            session.report_soon()
            await until(lambda: len(answers()) == 2)
            sent, riding = answers()[1]
            assert riding.ongoing == 3 and riding.health_check.check_id == 2
            assert sent - checks[1] < hold
            count = len(recorder.reports)
            await asyncio.sleep(hold + 0.1)  # past the hold: an upper bound, not a wait
            assert len(recorder.reports) == count
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.stop(None)

    asyncio.run(scenario())


class Silent(pb_grpc.ControllerServicer):
    """Takes registrations and never answers them; counts the streams."""

    def __init__(self) -> None:
        self.streams: list[float] = []

    async def ReplicaSession(self, request_iterator: AsyncIterator[pb.ReplicaReport],
                             context: Any) -> AsyncIterator[pb.ReplicaCommand]:
        self.streams.append(time.monotonic())
        async for _ in request_iterator:
            pass
        if False:  # pragma: no cover - an async generator that yields nothing
            yield pb.ReplicaCommand()


def test_an_unanswered_registration_is_retried_when_overdue_not_at_a_heartbeat(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The heartbeat is far off: the session must wake for the overdue answer itself.
    monkeypatch.setattr(session_module, "HEARTBEAT_S", 30.0)
    monkeypatch.setattr(session_module, "REGISTER_TIMEOUT_S", 0.2)

    async def scenario() -> list[float]:
        controller = Silent()
        server, port = await loopback_server(pb_grpc.add_ControllerServicer_to_server,
                                             controller)

        async def on_command(command: pb.ReplicaCommand) -> None:
            pass

        session = ControllerSession(
            "r1", "127.0.0.1:1", LeaderLocator(controllers=[f"127.0.0.1:{port}"]),
            lambda: pb.ReplicaReport(state=pb.RUNNING), on_command)
        task = asyncio.get_running_loop().create_task(session.run())
        try:
            await until(lambda: len(controller.streams) >= 3, timeout=10.0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.stop(None)
        return controller.streams

    streams = asyncio.run(scenario())
    # 0.2 s, then 0.4 s (doubled): well under the heartbeat.
    assert 0.15 <= streams[1] - streams[0] < 5.0
    assert streams[2] - streams[1] >= streams[1] - streams[0] - 0.1
