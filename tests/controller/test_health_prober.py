"""Which replicas' health checks are due and how their failures count: pure decisions;
and the prober that asks over the sessions, with a stand-in for them."""

from __future__ import annotations

import random

from weir.controller.health_prober import (
    HEALTH_CHECK_FAILURE_THRESHOLD,
    NO_SESSION,
    CheckBook,
    CheckChanges,
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
    assert [t.replica_id for t in first.put] == ["a", "b"] and first.removed == []
    views["a"], views["c"] = view("a", stopping=True), view("c")
    assert checks.update(periods, views.values(), ["a"], views, address) == CheckChanges(
        [], ["a"])
    # Viewed again unchanged: nothing to tell the book.
    assert checks.update(periods, views.values(), ["b"], views, address) == CheckChanges()
    slower = {("app", "D"): (20.0, 30.0)}
    again = checks.update(slower, views.values(), [], views, address)
    assert sorted((t.replica_id, t.period_s) for t in again.put) == [("b", 20.0), ("c", 20.0)]
    assert again.removed == []
    del views["b"]  # its record is gone
    assert checks.update(slower, views.values(), ["b"], views, address) == CheckChanges(
        [], ["b"])


def start(book: CheckBook, now: float, put: list[CheckTarget] | None = None,
          removed: list[str] | None = None) -> list[tuple[str, int]]:
    """The changes given to `book`, then the checks due now as (replica id, check id)."""
    book.change(put or [], removed or [], now)
    return [(t.replica_id, i) for t, i in book.start(now)]


def test_a_check_is_asked_a_period_after_the_replica_is_listed_with_a_new_id() -> None:
    book = CheckBook()
    assert start(book, 0.0, [A, B]) == []
    assert start(book, 1.0) == [("b", 1)]
    assert start(book, 2.5) == []  # b's check is still in flight
    assert book.finish("b", 1, "") is False
    assert start(book, 2.5) == [("b", 2)]
    assert start(book, 3.0, removed=["b"]) == []  # b stopped being RUNNING: forgotten
    assert "b" not in book.in_flight and "b" not in book.targets
    assert start(book, 100.0) == [("a", 3)]  # nor is it checked again


def test_a_replica_whose_period_changes_is_checked_on_the_new_period() -> None:
    book = CheckBook()
    start(book, 0.0, [A])
    assert start(book, 5.0, [CheckTarget("a", period_s=2.0, timeout_s=30.0)]) == [("a", 1)]
    book.finish("a", 1, "")
    assert start(book, 6.9) == []
    assert start(book, 7.0) == [("a", 2)]
    # Slower while in flight: the next check a new period after this one started.
    start(book, 7.5, [CheckTarget("a", period_s=4.0, timeout_s=30.0)])
    book.finish("a", 2, "")
    assert start(book, 9.0) == [] and start(book, 10.9) == []
    assert start(book, 11.0) == [("a", 3)]


def test_a_replica_that_leaves_and_comes_back_is_due_a_period_after_it_came_back() -> None:
    book = CheckBook()
    start(book, 0.0, [B])
    start(book, 0.5, removed=["b"])
    assert start(book, 1.0, [B]) == []
    assert start(book, 2.0) == [("b", 1)]


def test_the_due_heap_stays_within_twice_the_targets() -> None:
    book = CheckBook()
    for n in range(1000):
        book.change([CheckTarget("a", period_s=1000.0 + n, timeout_s=1.0)], [], 0.0)
    assert len(book._due) <= 2 * len(book.targets) + 64
    assert start(book, 1998.9) == [] and start(book, 1999.0) == [("a", 1)]


def test_the_due_checks_and_expiries_are_those_of_the_plain_walk() -> None:
    # A randomized run against the walk over every target (`due_checks`): targets come,
    # change period and go, checks are answered or not; at every step the book starts
    # exactly the checks the walk finds due and expires exactly the unanswered ones.
    rng = random.Random(18)
    book = CheckBook()
    targets: dict[str, CheckTarget] = {}
    last_started: dict[str, float] = {}
    in_flight: dict[str, tuple[int, float]] = {}  # check id, deadline
    started = expired = 0
    for step in range(3000):
        now = step * 0.25
        want_expired = sorted((rid, c) for rid, (c, deadline) in in_flight.items()
                              if deadline <= now)
        got_expired = book.expired(now)
        assert sorted((rid, c) for rid, c, _ in got_expired) == want_expired, step
        for rid, check_id, reason in got_expired:
            book.finish(rid, check_id, reason)
            del in_flight[rid]
        expired += len(got_expired)
        put, removed = [], []
        for rid in sorted({f"r{rng.randrange(30)}" for _ in range(rng.randrange(4))}):
            if rng.random() < 0.3:
                removed.append(rid)
                targets.pop(rid, None)
                last_started.pop(rid, None)
                in_flight.pop(rid, None)
            else:
                t = CheckTarget(rid, period_s=rng.choice([0.5, 1.0, 2.5]),
                                timeout_s=rng.choice([0.25, 1.0, 4.0]))
                put.append(t)
                targets[rid] = t
                last_started.setdefault(rid, now)
        want_due = due_checks(targets.values(), last_started, in_flight, now)
        book.change(put, removed, now)
        got = book.start(now)
        assert sorted(t.replica_id for t, _ in got) == sorted(t.replica_id for t in want_due)
        started += len(got)
        for t, check_id in got:
            last_started[t.replica_id] = now
            in_flight[t.replica_id] = (check_id, now + t.timeout_s)
        for rid, (check_id, _) in list(in_flight.items()):
            if rng.random() < 0.3:
                book.finish(rid, check_id, rng.choice(["", "sick"]))
                del in_flight[rid]
    assert book.in_flight == {rid: c for rid, (c, _) in in_flight.items()}
    assert started > 1000 and expired > 100  # the run did exercise both


def test_threshold_failures_in_a_row_make_a_replica_unhealthy_once() -> None:
    book = CheckBook()
    start(book, 0.0, [B])
    verdicts = []
    for n in range(HEALTH_CHECK_FAILURE_THRESHOLD + 1):
        (_, check_id), = start(book, float(n + 1))
        verdicts.append(book.finish("b", check_id, f"failure {n}"))
    assert verdicts == [False] * (HEALTH_CHECK_FAILURE_THRESHOLD - 1) + [True, False]
    assert book.failures == {"b": f"failure {HEALTH_CHECK_FAILURE_THRESHOLD - 1}"}


def test_a_pass_ends_the_run_of_failures() -> None:
    book = CheckBook()
    start(book, 0.0, [B])
    results = ["bad", "bad", "", "bad", "bad"]
    for n, reason in enumerate(results):
        (_, check_id), = start(book, float(n + 1))
        assert book.finish("b", check_id, reason) is False
    assert book.consecutive == {"b": 2} and not book.failures


def test_an_answer_to_a_check_no_longer_in_flight_counts_for_nothing() -> None:
    book = CheckBook()
    start(book, 0.0, [B])
    (_, first), = start(book, 1.0)
    assert book.finish("b", first, "no answer in time") is False
    (_, second), = start(book, 2.0)
    # The first check's answer comes late, and an answer from an earlier session's ids:
    assert book.finish("b", first, "") is None
    assert book.finish("b", 999, "") is None
    assert book.in_flight == {"b": second} and book.consecutive == {"b": 1}


def test_a_check_not_answered_within_its_timeout_has_expired() -> None:
    book = CheckBook()
    start(book, 0.0, [B])
    (_, check_id), = start(book, 1.0)
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

    prober = HealthProber(lambda: unhealthy.append(True), lambda: now[0], send,
                          lambda rid: None)
    targets = [CheckTarget(rid, period_s=1.0, timeout_s=0.5) for rid in "abc"]
    prober.update(CheckChanges(targets))
    for round_ in range(1, HEALTH_CHECK_FAILURE_THRESHOLD + 1):
        now[0] = float(round_)
        sent.clear()
        prober.update(CheckChanges())  # b's check of the last round, unanswered, has expired
        assert [(rid, c.kind) for rid, c in sent] == [("a", pb.CHECK_HEALTH),
                                                     ("b", pb.CHECK_HEALTH)]
        # a answers; b never does; c has no session: its check fails at its timeout.
        healthy = round_ == 1
        prober.answered("a", pb.HealthCheckAnswer(check_id=sent[0][1].health_check_id,
                                                  healthy=healthy, message="sick"))
    assert prober.book.consecutive == {"a": 2, "b": 2, "c": 2}
    now[0] += 0.5
    prober.update(CheckChanges())
    assert prober.failures == {
        "b": "no answer within health_check_timeout_s=0.5", "c": NO_SESSION}
    assert len(unhealthy) == 2
    # b stops being RUNNING: forgotten, its verdict with it.
    prober.update(CheckChanges(removed=["b"]))
    assert "b" not in prober.failures and "b" not in prober.book.in_flight
