"""A registering replica's first commands: a pure decision."""

from __future__ import annotations

import json

from weir.controller.registration import first_commands
from weir.protos import weir_pb2 as pb


def report(version: str = "", state: int = pb.STARTING) -> pb.ReplicaReport:
    return pb.ReplicaReport(replica_id="app#D#1", pid=7, version=version, state=state)


def test_a_replica_just_launched_is_told_what_to_run_or_to_stop() -> None:
    [init] = first_commands(report(), {"app": "app"}, stopping=False)
    assert init.kind == pb.INIT and json.loads(init.spec_json) == {"app": "app"}
    [stop] = first_commands(report(), None, stopping=False)
    assert stop.kind == pb.STOP and stop.graceful_shutdown_timeout_s == 5


def test_a_running_replica_registering_again_is_told_nothing_unless_stopping() -> None:
    running = report(version="v1", state=pb.RUNNING)
    assert first_commands(running, {"app": "app"}, stopping=False) == []
    assert [c.kind for c in first_commands(running, None, stopping=True)] == [pb.STOP]
