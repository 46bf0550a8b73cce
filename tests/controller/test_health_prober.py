"""Which replicas' health checks are due and how their failures count: pure decisions;
and the prober that asks over the sessions, with a stand-in for them."""

from __future__ import annotations

from weir.controller.health_prober import (
    HEALTH_CHECK_FAILURE_THRESHOLD,
    NO_SESSION,
    CheckBook,
    CheckTarget,
    CheckTargets,
    HealthProber,
    due_checks,
)
from weir.controller.reconciler import ReplicaView
from weir.protos import weir_pb2 as pb

A = CheckTarget("a", period_s=10.0, timeout_s=30.0)
B = CheckTarget("b", period_s=1.0, timeout_s=1.0)


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
    address = {"a": "h:1", "b": "h:2", "c": "h:3"}.get  # registered with this leader
    first = checks.update(periods, views.values(), [], views, address)
    assert [t.replica_id for t in first] == ["a", "b"]
    views["a"], views["c"] = view("a", stopping=True), view("c")
    assert [t.replica_id for t in checks.update(periods, views.values(), ["a"], views,
                                                 address)] == ["b"]
    slower = {("app", "D"): (20.0, 30.0)}
    again = checks.update(slower, views.values(), [], views, address)
    assert sorted((t.replica_id, t.period_s) for t in again) == [("b", 20.0), ("c", 20.0)]


def test_a_check_is_asked_a_period_after_the_replica_is_listed_with_a_new_id() -> None:
    book = CheckBook()
    assert book.start([A, B], now=0.0) == ([], [])
    gone, due = book.start([A, B], now=1.0)
    assert gone == [] and [(t.replica_id, i) for t, i in due] == [("b", 1)]
    assert book.start([A, B], now=2.5) == ([], [])  # b's check is still in flight
    assert book.finish("b", 1, "") is False
    assert [(t.replica_id, i) for t, i in book.start([A, B], now=2.5)[1]] == [("b", 2)]
    assert book.start([A], now=3.0) == (["b"], [])  # b stopped being RUNNING: forgotten
    assert "b" not in book.in_flight


def test_threshold_failures_in_a_row_make_a_replica_unhealthy_once() -> None:
    book = CheckBook()
    book.start([B], now=0.0)
    verdicts = []
    for n in range(HEALTH_CHECK_FAILURE_THRESHOLD + 1):
        (_, check_id), = book.start([B], now=float(n + 1))[1]
        verdicts.append(book.finish("b", check_id, f"failure {n}"))
    assert verdicts == [False] * (HEALTH_CHECK_FAILURE_THRESHOLD - 1) + [True, False]
    assert book.failures == {"b": f"failure {HEALTH_CHECK_FAILURE_THRESHOLD - 1}"}


def test_a_pass_ends_the_run_of_failures() -> None:
    book = CheckBook()
    book.start([B], now=0.0)
    results = ["bad", "bad", "", "bad", "bad"]
    for n, reason in enumerate(results):
        (_, check_id), = book.start([B], now=float(n + 1))[1]
        assert book.finish("b", check_id, reason) is False
    assert book.consecutive == {"b": 2} and not book.failures


def test_an_answer_to_a_check_no_longer_in_flight_counts_for_nothing() -> None:
    book = CheckBook()
    book.start([B], now=0.0)
    (_, first), = book.start([B], now=1.0)[1]
    assert book.finish("b", first, "no answer in time") is False
    (_, second), = book.start([B], now=2.0)[1]
    # The first check's answer comes late, and an answer from an earlier session's ids:
    assert book.finish("b", first, "") is None
    assert book.finish("b", 999, "") is None
    assert book.in_flight == {"b": second} and book.consecutive == {"b": 1}


def test_a_check_not_answered_within_its_timeout_has_expired() -> None:
    book = CheckBook()
    book.start([B], now=0.0)
    (_, check_id), = book.start([B], now=1.0)[1]
    assert book.expired(1.99) == []
    assert book.expired(2.0) == [("b", check_id, "no answer within health_check_timeout_s=1")]
    assert book.finish("b", check_id, "") is False
    assert book.expired(5.0) == []  # answered: nothing left to expire


def test_the_prober_asks_on_the_session_and_fails_what_is_not_answered_in_time() -> None:
    now = [0.0]
    sent: list[tuple[str, pb.ReplicaCommand]] = []
    unhealthy: list[bool] = []

    def send(rid: str, command: pb.ReplicaCommand) -> bool:
        if rid == "c":
            return False  # no session
        sent.append((rid, command))
        return True

    prober = HealthProber(lambda: unhealthy.append(True), lambda: now[0], send)
    targets = [CheckTarget(rid, period_s=1.0, timeout_s=0.5) for rid in "abc"]
    prober.update(targets)
    for round_ in range(1, HEALTH_CHECK_FAILURE_THRESHOLD + 1):
        now[0] = float(round_)
        sent.clear()
        prober.update(targets)  # b's check of the last round, unanswered, has expired
        assert [(rid, c.kind) for rid, c in sent] == [("a", pb.CHECK_HEALTH),
                                                     ("b", pb.CHECK_HEALTH)]
        # a answers; b never does; c has no session and failed at once.
        healthy = round_ == 1
        prober.answered("a", pb.HealthCheckAnswer(check_id=sent[0][1].health_check_id,
                                                  healthy=healthy, message="sick"))
    assert prober.book.consecutive == {"a": 2, "b": 2, "c": 3}
    now[0] += 0.5
    prober.update(targets)
    assert prober.failures == {
        "b": "no answer within health_check_timeout_s=0.5", "c": NO_SESSION}
    assert len(unhealthy) == 2
    # b stops being RUNNING: forgotten, its verdict with it.
    prober.update(targets[::2])
    assert "b" not in prober.failures and "b" not in prober.book.in_flight
