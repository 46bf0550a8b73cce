"""When each replica's health-check answer is due and how failures count: pure decisions;
and the prober that takes the answers, with a stand-in for the sessions."""

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
)
from weir.controller.reconciler import ReplicaView
from weir.health_promise import next_answer_within
from weir.protos import weir_pb2 as pb

A = CheckTarget("a", period_s=10.0, timeout_s=30.0)
B = CheckTarget("b", period_s=1.0, timeout_s=1.0)
#: What B promises with each answer: 1 + 1 + 0.5 held + 1 margin.
B_WITHIN = 3.5


def test_an_answer_promises_the_next_within_period_timeout_hold_and_margin() -> None:
    assert next_answer_within(1.0, 1.0) == B_WITHIN == B.first_within_s
    assert next_answer_within(10.0, 30.0) == 46.0  # Ray's defaults
    assert (A.again_within_s, B.again_within_s) == (30.0, 1.0)


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


def expired(book: CheckBook, now: float) -> list[tuple[str, bool]]:
    """The replicas whose promise `book` found broken at `now`, and whether each is now
    UNHEALTHY."""
    return [(rid, unhealthy) for rid, _, unhealthy in book.expired(now)]


def test_a_replica_owes_its_first_answer_as_if_it_had_just_answered() -> None:
    book = CheckBook()
    book.change([A, B], [], 0.0)
    assert expired(book, B_WITHIN - 0.01) == []
    assert expired(book, B_WITHIN) == [("b", False)]
    assert book.consecutive == {"b": 1}
    book.forget("b")
    assert expired(book, 45.99) == [] and expired(book, 46.0) == [("a", False)]


def test_each_answer_moves_the_due_time_to_what_it_promised() -> None:
    book = CheckBook()
    book.change([B], [], 0.0)
    for n in range(1, 20):  # answers every 3 s, each promising 3.5: never late
        assert expired(book, 3.0 * n) == []
        assert book.answered("b", "", 3.5, 3.0 * n) is False
    # An answer promising nothing (0): the target's own promise.
    assert book.answered("b", "", 0.0, 100.0) is False
    assert expired(book, 103.49) == [] and expired(book, 103.5) == [("b", False)]
    # A longer promise (an old replica on a longer period) is taken as given.
    book.answered("b", "", 50.0, 200.0)
    assert expired(book, 249.9) == [] and expired(book, 250.0) == [("b", False)]


def test_broken_promises_in_a_row_make_a_replica_unhealthy_once() -> None:
    assert HEALTH_CHECK_FAILURE_THRESHOLD == 3  # Ray's; the runs below count to it
    book = CheckBook()
    book.change([CheckTarget("c", period_s=1.0, timeout_s=2.0)], [], 0.0)
    first = 1 + 2 + 0.5 + 1
    # Each broken promise is a failed check; the next is due max(period, timeout) later,
    # as a check in flight would have timed out again.
    seen = [expired(book, t) for t in (first, first + 1.99, first + 2, first + 4, first + 6)]
    assert seen == [[("c", False)], [], [("c", False)], [("c", True)], [("c", False)]]
    reason = book.failures["c"]
    assert reason.startswith("no answer for 8.5 s (health_check_period_s=1, "
                             "health_check_timeout_s=2)"), reason


def test_unhealthy_answers_count_and_a_healthy_one_ends_the_run() -> None:
    book = CheckBook()
    book.change([B], [], 0.0)
    verdicts = [book.answered("b", reason, B_WITHIN, float(n))
                for n, reason in enumerate(["bad", "bad", "", "bad", "bad", "sick", "bad"])]
    assert verdicts == [False, False, False, False, False, True, False]
    assert book.failures == {"b": "sick"} and book.consecutive == {"b": 4}


def test_an_answer_from_a_replica_not_checked_counts_for_nothing() -> None:
    book = CheckBook()
    assert book.answered("x", "sick", 3.0, 0.0) is None
    assert book.due == {} and book.consecutive == {}


def test_a_replica_that_leaves_and_comes_back_owes_a_first_answer_again() -> None:
    book = CheckBook()
    book.change([B], [], 0.0)
    book.change([], ["b"], 0.5)
    assert expired(book, 10.0) == []  # forgotten: its old due time is stale
    book.change([B], [], 10.0)
    assert expired(book, 10.0 + B_WITHIN - 0.01) == []
    assert expired(book, 10.0 + B_WITHIN) == [("b", False)]


def test_a_new_period_keeps_the_promise_already_made() -> None:
    book = CheckBook()
    book.change([B], [], 0.0)
    book.change([CheckTarget("b", period_s=100.0, timeout_s=1.0)], [], 1.0)
    assert expired(book, B_WITHIN) == [("b", False)]
    assert book.targets["b"].period_s == 100.0


def test_the_heap_stays_within_twice_the_targets() -> None:
    book = CheckBook()
    book.change([B], [], 0.0)
    for n in range(1000):
        book.answered("b", "", B_WITHIN, n * 0.001)
        book.change([], [], n * 0.001)
    assert len(book._heap) <= 2 * len(book.targets) + 64
    assert expired(book, 0.999 + B_WITHIN - 0.01) == []
    assert expired(book, 0.999 + B_WITHIN) == [("b", False)]


def test_the_broken_promises_are_those_of_the_plain_walk() -> None:
    # A randomized run against a walk over every target's due time: targets come, change
    # options and go, answers come or not; at every step the book finds broken exactly
    # the promises the walk finds past due, and counts failures as the walk does.
    rng = random.Random(18)
    book = CheckBook()
    due: dict[str, float] = {}
    targets: dict[str, CheckTarget] = {}
    failures_in_row: dict[str, int] = {}
    broken = answered = 0
    for step in range(3000):
        now = step * 0.25
        want = sorted(rid for rid, at in due.items() if at <= now)
        got = book.expired(now)
        assert sorted(rid for rid, _, _ in got) == want, step
        for rid in want:
            due[rid] = now + targets[rid].again_within_s
            failures_in_row[rid] = failures_in_row.get(rid, 0) + 1
        broken += len(got)
        put, removed = [], []
        for rid in sorted({f"r{rng.randrange(30)}" for _ in range(rng.randrange(4))}):
            if rng.random() < 0.3:
                removed.append(rid)
                for d in (due, targets, failures_in_row):
                    d.pop(rid, None)
            else:
                t = CheckTarget(rid, period_s=rng.choice([0.5, 1.0, 2.5]),
                                timeout_s=rng.choice([0.25, 1.0, 4.0]))
                put.append(t)
                targets[rid] = t
                due.setdefault(rid, now + t.first_within_s)
        book.change(put, removed, now)
        for rid in list(targets):
            if rng.random() < 0.2:
                reason = rng.choice(["", "", "sick"])
                within = rng.choice([0.0, 1.0, 3.0])
                assert book.answered(rid, reason, within, now) is not None
                due[rid] = now + (within or targets[rid].first_within_s)
                failures_in_row[rid] = failures_in_row.get(rid, 0) + 1 if reason else 0
                answered += 1
        assert {r: c for r, c in failures_in_row.items() if c} == book.consecutive
    assert {r: at for r, (at, _) in book.due.items()} == due
    assert broken > 300 and answered > 1000  # the run did exercise both


def test_the_prober_takes_answers_and_fails_broken_promises() -> None:
    now = [0.0]
    unhealthy: list[bool] = []
    connected = {"a": True, "b": True, "c": False}
    prober = HealthProber(lambda: unhealthy.append(True), lambda: now[0],
                          connected.__getitem__, lambda rid: None)
    targets = [CheckTarget(rid, period_s=1.0, timeout_s=0.5) for rid in "abc"]
    prober.update(CheckChanges(targets))
    # a answers unhealthy, each time within its promise; b is connected and silent
    # (frozen); c has no session.
    for round_ in range(1, 6):  # b and c break promises at 3, 4 and 5
        now[0] = float(round_)
        prober.answered("a", pb.HealthCheckAnswer(check_id=round_, healthy=round_ > 3,
                                                  message="sick", next_within_s=3.0))
        prober.update(CheckChanges())
    assert prober.book.consecutive == {"b": 3, "c": 3}
    assert prober.failures["a"] == "sick"
    assert prober.failures["b"].startswith("no answer for 5 s")
    assert prober.failures["c"] == NO_SESSION
    assert len(unhealthy) == 3
    # An answer from a replica that is not checked (not RUNNING here) is ignored.
    prober.answered("x", pb.HealthCheckAnswer(check_id=1, healthy=False))
    assert "x" not in prober.failures
    # b stops being RUNNING: forgotten, its verdict with it.
    prober.update(CheckChanges(removed=["b"]))
    assert "b" not in prober.failures and "b" not in prober.book.due
