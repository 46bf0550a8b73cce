"""The gauges of a pass: made again only where a deployment changed, and then whole."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry

from weir.controller.gauges import Gauges
from weir.controller.reconciler import DeploymentTarget, ReplicaView
from weir.metrics import ClusterSnapshot, ControllerMetrics

A, B = ("app", "A"), ("app", "B")
TARGETS = {A: DeploymentTarget("app", "A", "v1", 1, ""),
           B: DeploymentTarget("app", "B", "v1", 1, "")}


def test_the_snapshot_is_made_again_only_when_a_view_a_target_or_a_failure_changed() -> None:
    a = ReplicaView("a1", "app", "A", "v1", "RUNNING")
    b = ReplicaView("b1", "app", "B", "v1", "RUNNING")
    gauges = Gauges()
    make_first = gauges.update({A: [a], B: [b]}, set(), TARGETS, set(), set())
    assert make_first is not None
    first = make_first()
    assert first.replica_states == {("app", "A", "RUNNING"): 1, ("app", "B", "RUNNING"): 1}
    # Done again (swept) with the same rows, or taken as they were: nothing new.
    assert gauges.update({A: [a], B: [b]}, {B}, TARGETS, set(), set()) is None
    # A view changed in a deployment done again: the whole snapshot, the other's views kept.
    make_after = gauges.update({A: [replace(a, stopping=True)], B: [b]}, {B}, TARGETS,
                               {"b1"}, set())
    assert make_after is not None
    after = make_after()
    assert after.replica_states == {("app", "A", "STOPPING"): 1, ("app", "B", "RUNNING"): 1}
    # B not done again: its views as they were, with the failing replicas as they are now.
    assert after.replica_healthy[("app", "B", "b1")] == 0.0
    assert gauges.update({A: [replace(a, stopping=True)], B: [b]}, {A, B}, TARGETS, set(),
                         set()) is not None  # b1 no longer failing
    assert gauges.update({A: [replace(a, stopping=True)], B: [b]}, {A, B},
                         {**TARGETS, B: replace(TARGETS[B], num_replicas=2)}, set(),
                         set()) is not None


def test_a_snapshot_is_made_when_first_read_and_shows_its_own_pass() -> None:
    metrics = ControllerMetrics(CollectorRegistry())
    a = ReplicaView("a1", "app", "A", "v1", "RUNNING")
    gauges = Gauges()
    make = gauges.update({A: [a]}, set(), {A: TARGETS[A]}, set(), set())
    assert make is not None
    metrics.snapshot_later(make)
    # A later pass's rows do not change what the earlier pass's maker reads.
    assert gauges.update({A: [replace(a, state="DEAD")]}, set(), {A: TARGETS[A]}, set(),
                         set()) is not None
    assert metrics.snapshot.replica_states == {("app", "A", "RUNNING"): 1}
    metrics.snapshot = ClusterSnapshot()
    assert metrics.snapshot.replica_states == {}
