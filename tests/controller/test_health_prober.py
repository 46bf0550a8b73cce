"""Which replicas' health checks are due: a pure decision."""

from __future__ import annotations

from weir.controller.health_prober import CheckTarget, CheckTargets, due_checks
from weir.controller.reconciler import ReplicaView

A = CheckTarget("a", "127.0.0.1:1", period_s=10.0, timeout_s=30.0)
B = CheckTarget("b", "127.0.0.1:2", period_s=1.0, timeout_s=1.0)


def test_a_check_is_due_one_period_after_the_last() -> None:
    assert due_checks([A, B], {"a": 0.0, "b": 0.0}, [], now=0.5) == []
    assert due_checks([A, B], {"a": 0.0, "b": 0.0}, [], now=1.0) == [B]
    assert due_checks([A, B], {"a": 0.0, "b": 0.0}, [], now=10.0) == [A, B]


def test_a_check_in_flight_is_not_started_again() -> None:
    assert due_checks([B], {"b": 0.0}, ["b"], now=5.0) == []


def test_a_replica_never_seen_is_not_due_yet() -> None:
    assert due_checks([A], {}, [], now=100.0) == []


def test_the_check_list_follows_the_replicas_viewed_again() -> None:
    # Kept across updates: a replica not viewed again keeps its check even if its view
    # changed unseen; one viewed again stopping loses it; a change of the deployment's
    # options looks at every replica again.
    def view(rid: str, state: str = "RUNNING", stopping: bool = False) -> ReplicaView:
        return ReplicaView(rid, "app", "D", "v1", state, stopping=stopping)

    checks = CheckTargets()
    periods = {("app", "D"): (10.0, 30.0)}
    views = {"a": view("a"), "b": view("b"), "c": view("c", "STARTING")}
    address = {"a": "h:1", "b": "h:2", "c": "h:3"}.get
    first = checks.update(periods, views.values(), [], views, address)
    assert [t.replica_id for t in first] == ["a", "b"]
    views["a"], views["c"] = view("a", stopping=True), view("c")
    assert [t.replica_id for t in checks.update(periods, views.values(), ["a"], views,
                                                 address)] == ["b"]
    slower = {("app", "D"): (20.0, 30.0)}
    again = checks.update(slower, views.values(), [], views, address)
    assert sorted((t.replica_id, t.period_s) for t in again) == [("b", 20.0), ("c", 20.0)]
