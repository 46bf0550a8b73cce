"""Judging deployment health: crash-loop backoff per version, reset on redeploy or delete."""

from __future__ import annotations

from weir.controller.health import (
    MAX_BACKOFF_S,
    START_ERROR_BACKOFF_S,
    DeploymentHealth,
    crash_loop_delay,
    judge,
    may_start,
)
from weir.controller.reconciler import DeploymentTarget, ReplicaView

KEY = ("app", "D")
V1 = DeploymentTarget("app", "D", "v1", 2, "null")
V2 = DeploymentTarget("app", "D", "v2", 2, "null")


def failed(i: int, version: str = "v1", state: str = "FAILED") -> ReplicaView:
    return ReplicaView(f"r{i}", "app", "D", version, state,
                       message=f"replica r{i} failed to start: ValueError: boom")


def running(i: int, version: str = "v1") -> ReplicaView:
    return ReplicaView(f"r{i}", "app", "D", version, "RUNNING")


def crash_loop(passes: int, now: float = 0.0) -> dict[tuple[str, str], DeploymentHealth]:
    health: dict[tuple[str, str], DeploymentHealth] = {}
    for i in range(passes):
        health = judge({KEY: V1}, [failed(i)], health, now=now + i)
    return health


def test_backoff_doubles_to_a_cap() -> None:
    assert [crash_loop_delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert crash_loop_delay(50) == MAX_BACKOFF_S


def test_each_failure_counts_and_backs_off_with_the_reason() -> None:
    health = crash_loop(6)
    h = health[KEY]
    assert h.consecutive_failures == 6
    assert "ValueError: boom" in h.message
    assert h.backoff_until == 5 + crash_loop_delay(6)
    assert KEY not in may_start(health, [KEY], now=6.0)
    assert KEY in may_start(health, [KEY], now=h.backoff_until)


def test_a_new_version_starts_clean() -> None:
    health = crash_loop(8)
    after = judge({KEY: V2}, [], health, now=10.0)[KEY]
    assert (after.message, after.consecutive_failures, after.backoff_until) == ("", 0, 0.0)
    assert KEY in may_start({KEY: after}, [KEY], now=10.0)


def test_failures_of_an_old_version_do_not_back_off_the_new_one() -> None:
    health = judge({KEY: V2}, [failed(1, version="v1")], {}, now=0.0)
    assert health[KEY].consecutive_failures == 0


def test_a_deleted_deployment_is_forgotten() -> None:
    health = crash_loop(3)
    assert judge({}, [], health, now=5.0) == {}


def test_enough_running_replicas_clear_the_trouble() -> None:
    health = crash_loop(3)
    h = judge({KEY: V1}, [running(1), running(2)], health, now=5.0)[KEY]
    assert (h.message, h.consecutive_failures, h.backoff_until) == ("", 0, 0.0)
    assert (h.healthy_version, h.healthy_replicas) == ("v1", 2)


def test_dead_after_a_drain_is_not_a_failure_but_a_crash_is() -> None:
    drained = ReplicaView("r1", "app", "D", "v1", "DEAD", last_state="STOPPING")
    crashed = ReplicaView("r2", "app", "D", "v1", "DEAD", last_state="RUNNING",
                          message="replica r2 died unexpectedly")
    assert judge({KEY: V1}, [drained], {}, now=0.0)[KEY].consecutive_failures == 0
    h = judge({KEY: V1}, [crashed], {}, now=0.0)[KEY]
    assert h.consecutive_failures == 1 and "died unexpectedly" in h.message


def test_a_start_error_backs_off_and_says_why() -> None:
    h = judge({KEY: V1}, [], {}, now=1.0,
              start_errors={KEY: "runtime_env.working_dir: '/nope' is not a directory"})[KEY]
    assert "is not a directory" in h.message
    assert h.backoff_until == 1.0 + START_ERROR_BACKOFF_S


def test_judging_never_changes_the_previous_judgement() -> None:
    previous = {KEY: DeploymentHealth(version="v1")}
    judge({KEY: V1}, [failed(1)], previous, now=0.0)
    assert previous == {KEY: DeploymentHealth(version="v1")}
