"""Which replicas' health checks are due: a pure decision."""

from __future__ import annotations

from weir.controller.health_prober import CheckTarget, due_checks

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
