"""The reconcile plan as a pure function: no etcd, no processes."""

from weir.controller.reconciler import (
    DeploymentTarget,
    Forget,
    Reconfigure,
    ReplicaView,
    Start,
    Stop,
    plan,
)

UC = '{"a": 1}'


def target(n: int = 2, version: str = "v1", uc: str = "null") -> DeploymentTarget:
    return DeploymentTarget("app", "D", version, n, uc)


def replica(i: int, version: str = "v1", state: str = "RUNNING", **kw: object) -> ReplicaView:
    return ReplicaView(f"r{i}", "app", "D", version, state, kw.pop("uc", "null"), **kw)  # type: ignore[arg-type]


def test_starts_missing_replicas() -> None:
    p = plan([target(3)], [replica(1)])
    assert p.of(Start) == [Start("app", "D", "v1")] * 2
    assert not p.of(Stop)


def test_steady_state_is_a_no_op() -> None:
    assert plan([target(2)], [replica(1), replica(2)]).actions == []


def test_scale_down_stops_non_running_first() -> None:
    p = plan([target(1)], [replica(1), replica(2, state="STARTING")])
    assert p.of(Stop) == [Stop("r2", "scaled down")]


def test_rolling_update_keeps_old_until_new_run() -> None:
    reps = [replica(1, "v1"), replica(2, "v1")]
    p = plan([target(2, "v2")], reps)
    assert p.of(Start) == [Start("app", "D", "v2")] * 2
    assert not p.of(Stop), "old replicas keep serving while the new ones start"
    reps += [replica(3, "v2"), replica(4, "v2", state="STARTING")]
    p = plan([target(2, "v2")], reps)
    assert len(p.of(Stop)) == 1 and not p.of(Start)
    reps[3] = replica(4, "v2")
    p = plan([target(2, "v2")], reps)
    assert {a.replica_id for a in p.of(Stop)} == {"r1", "r2"}  # type: ignore[attr-defined]


def test_user_config_change_reconfigures_in_place() -> None:
    p = plan([target(2, uc=UC)], [replica(1), replica(2)])
    assert p.of(Reconfigure) == [Reconfigure("r1", UC), Reconfigure("r2", UC)]
    assert not p.of(Start) and not p.of(Stop)
    pending = plan([target(2, uc=UC)], [replica(1, pending_user_config=UC), replica(2, uc=UC)])
    assert pending.actions == []


def test_a_replica_whose_user_config_is_not_known_is_not_reconfigured() -> None:
    assert plan([target(1, uc=UC)], [replica(1, uc="")]).actions == []


def test_broken_and_dead_replicas() -> None:
    p = plan([target(2)], [replica(1, state="FAILED"), replica(2, state="DEAD"), replica(3)])
    assert Stop("r1", "replica is failed", kill=True) in p.actions
    assert Forget("r2") in p.actions
    assert p.of(Start) == [Start("app", "D", "v1")]


def test_backoff_blocks_starts() -> None:
    p = plan([target(2)], [], may_start=frozenset())
    assert p.actions == []


def test_removed_deployment_stops_but_frozen_app_is_left_alone() -> None:
    assert plan([], [replica(1)]).of(Stop) == [Stop("r1", "deployment removed")]
    assert plan([], [replica(1)], frozen_apps=frozenset({"app"})).actions == []


def test_overdue_stop_is_killed() -> None:
    p = plan([target(0)], [replica(1, stopping=True, stop_overdue=True)])
    assert p.actions == [Stop("r1", "graceful shutdown timed out", kill=True)]
    assert plan([target(0)], [replica(1, stopping=True)]).actions == []
