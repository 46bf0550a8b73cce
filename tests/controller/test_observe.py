"""Observation as a pure function: record + report + liveness + book -> view + book."""

from __future__ import annotations

from weir.controller.observe import REGISTER_TIMEOUT_S, ReplicaBook, SessionReport, observe
from weir.etcd.records import ReplicaRecord

REC = ReplicaRecord("app#D#1", "app", "D", "v1", pid=10, started_at=1000.0)


def report(state: str = "RUNNING", **kw: object) -> SessionReport:
    return SessionReport(connected=kw.pop("connected", True), state=state, **kw)  # type: ignore[arg-type]


def look(rep: SessionReport | None, *, alive: bool = True, book: ReplicaBook | None = None,
         health_failure: str = "", wall: float = 1001.0, mono: float = 50.0):  # type: ignore[no-untyped-def]
    return observe(REC, rep, alive=alive, book=book or ReplicaBook(),
                   health_failure=health_failure, wall_now=wall, mono_now=mono)


def test_connected_report_is_the_state_and_is_remembered() -> None:
    view, book = look(report("RUNNING", user_config_json='{"a": 1}'))
    assert (view.state, view.user_config_json) == ("RUNNING", '{"a": 1}')
    assert book.last_state == "RUNNING" and book.was_running


def test_session_down_keeps_the_last_state_while_the_process_lives() -> None:
    _, book = look(report("RUNNING"))
    view, _ = look(report("RUNNING", connected=False), book=book)
    assert view.state == "RUNNING"


def test_session_down_keeps_the_user_config_it_last_applied() -> None:
    # A RUNNING replica whose session dropped (a failover, a blip) still runs its config:
    # "" (unknown) made the leader reconfigure it with the config it already had.
    _, book = look(report("RUNNING", user_config_json="null"))
    view, _ = look(report("RUNNING", connected=False, user_config_json="null"), book=book)
    assert (view.state, view.user_config_json) == ("RUNNING", "null")


def test_process_gone_is_dead_with_a_reason() -> None:
    _, book = look(report("RUNNING"))
    view, after = look(None, alive=False, book=book)
    assert view.state == "DEAD"
    assert "died unexpectedly" in view.message
    assert after.last_state == "RUNNING"
    never, _ = look(None, alive=False)
    assert "exited before it was running" in never.message


def test_pending_too_long_is_failed() -> None:
    seen_at_launch = ReplicaBook(first_seen=REC.started_at)
    view, _ = look(None, book=seen_at_launch, wall=REC.started_at + REGISTER_TIMEOUT_S + 1)
    assert view.state == "FAILED" and "did not register" in view.message
    view, _ = look(None, book=seen_at_launch, wall=REC.started_at + 1)
    assert view.state == "PENDING"


def test_a_new_leader_gives_a_replica_launched_long_ago_the_whole_time_to_register() -> None:
    # A failover: the replica ran for minutes; this leader views it first now, before its
    # session has come back.
    now = REC.started_at + 5 * REGISTER_TIMEOUT_S
    view, book = look(None, wall=now)
    assert view.state == "PENDING" and book.first_seen == now
    view, book = look(None, book=book, wall=now + REGISTER_TIMEOUT_S - 1)
    assert view.state == "PENDING"
    view, _ = look(None, book=book, wall=now + REGISTER_TIMEOUT_S + 1)
    assert view.state == "FAILED"


def test_failed_health_check_makes_a_running_replica_unhealthy() -> None:
    view, book = look(report("RUNNING"), health_failure="no answer within 2 s")
    assert view.state == "UNHEALTHY"
    assert "failed its health check: no answer within 2 s" in view.message
    assert book.last_state == "RUNNING"
    starting, _ = look(report("STARTING"), health_failure="stale")
    assert starting.state == "STARTING"


def test_acknowledged_reconfigure_clears_the_pending_one() -> None:
    pending = ReplicaBook(pending_user_config='{"a": 2}')
    view, book = look(report("RUNNING", user_config_json='{"a": 1}'), book=pending)
    assert view.pending_user_config == '{"a": 2}' and book.pending_user_config == '{"a": 2}'
    view, book = look(report("RUNNING", user_config_json='{"a": 2}'), book=pending)
    assert view.pending_user_config is None and book.pending_user_config is None


def test_stop_deadline_makes_stopping_then_overdue() -> None:
    book = ReplicaBook(stop_deadline=60.0)
    view, _ = look(report("STOPPING"), book=book, mono=59.0)
    assert view.stopping and not view.stop_overdue
    view, _ = look(report("STOPPING"), book=book, mono=61.0)
    assert view.stop_overdue


def test_observing_does_not_change_the_book_passed_in() -> None:
    book = ReplicaBook()
    look(report("RUNNING"), book=book)
    assert book == ReplicaBook()


def test_the_reported_load_is_seen_only_while_connected() -> None:
    view, book = look(report("RUNNING", ongoing=4))
    assert view.ongoing == 4
    down, _ = look(report("RUNNING", connected=False, ongoing=4), book=book)
    assert down.ongoing == 0


def test_a_replica_that_reported_running_and_died_before_any_pass_viewed_it_died() -> None:
    # Listed RUNNING from its session, then its process killed before the next pass: the
    # dropped session's last report still says it ran.
    view, book = look(report("RUNNING", connected=False), alive=False)
    assert view.state == "DEAD"
    assert "died unexpectedly" in view.message
    assert book.was_running and book.last_state == "RUNNING"
    starting, _ = look(report("INITIALIZING", connected=False), alive=False)
    assert "exited before it was running" in starting.message
