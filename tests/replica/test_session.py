"""What a replica's reports to the leader carry of its multiplexed models: the set when it
changed since the last report of the stream, and nothing otherwise. No network."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from weir import multiplex
from weir.dataplane.route_table import LeaderLocator
from weir.protos import weir_pb2 as pb
from weir.replica.session import IDLE_REPORT_S, ControllerSession, report_due


@pytest.fixture(autouse=True)
def no_watchers() -> Iterator[None]:
    yield
    multiplex._watchers.clear()


def carried(report: pb.ReplicaReport) -> list[str] | None:
    if not report.HasField("multiplexed_models"):
        return None
    return list(report.multiplexed_models.model_ids)


def test_reports_carry_the_models_only_when_they_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def on_command(command: pb.ReplicaCommand) -> None:
        pass

    monkeypatch.setattr(multiplex, "_declared", [False])
    session = ControllerSession("r1", "addr", LeaderLocator(), pb.ReplicaReport, on_command)
    assert carried(session._report()) is None  # no loader: it does not multiplex

    @multiplex.multiplexed(max_num_models_per_replica=1)
    async def get_model(model_id: str) -> str:
        return model_id

    async def load(*model_ids: str) -> None:
        for model_id in model_ids:
            await get_model(model_id)

    # A loader now exists: the next report says so, with no model yet; then only changes.
    assert carried(session._report()) == []
    assert carried(session._report()) is None
    asyncio.run(load("m1"))
    assert carried(session._report()) == ["m1"]
    assert carried(session._report()) is None
    asyncio.run(load("m2"))  # evicts m1
    assert carried(session._report()) == ["m2"]
    session._sent_models = None  # what a new stream (a new leader) starts with
    assert carried(session._report()) == ["m2"]
    asyncio.run(multiplex.release_all())


def test_a_report_saying_nothing_new_waits_for_the_idle_interval() -> None:
    last = pb.ReplicaReport(replica_id="r1", state=pb.RUNNING, ongoing=2).SerializeToString()
    changed = pb.ReplicaReport(replica_id="r1", state=pb.RUNNING, ongoing=3).SerializeToString()
    assert report_due(changed, last, 0.0)
    assert not report_due(last, last, 1.0)
    assert not report_due(last, last, IDLE_REPORT_S - 0.01)
    assert report_due(last, last, IDLE_REPORT_S)
