"""Status roll-up as a pure function, with the seed's meanings and Ray's statuses."""

from typing import Any

from weir.controller.deployment_status import StatusInfo
from weir.controller.health import DeploymentHealth
from weir.controller.reconciler import DeploymentTarget, ReplicaView
from weir.controller.status import AppView, roll_up

T = DeploymentTarget("app", "D", "v1", 2, "null")
KEY = ("app", "D")


def status_document(*args: Any, **kwargs: Any) -> tuple[dict[str, Any], dict[Any, Any]]:
    """The document and the statuses of a roll-up of everything."""
    rollup = roll_up(*args, **kwargs)
    return rollup.doc, rollup.statuses


def doc(replicas: list[ReplicaView], health: DeploymentHealth | None = None,
        previous: StatusInfo | None = None, **app: object) -> dict[str, object]:
    view = AppView(name="app", deployment_timestamp=1.0, built=app.pop("built", True),  # type: ignore[arg-type]
                   build_error=app.pop("build_error", ""), deployments=["D"])  # type: ignore[arg-type]
    out, _ = status_document([view], {KEY: T}, replicas, {KEY: health or DeploymentHealth()},
                             {KEY: previous} if previous else {})
    return out["app"]  # type: ignore[no-any-return]


def r(i: int, state: str = "RUNNING", version: str = "v1", app: str = "app") -> ReplicaView:
    return ReplicaView(f"r{i}", app, "D", version, state)


def dep(d: dict[str, object]) -> dict[str, object]:
    return d["deployment_statuses"][0]  # type: ignore[index,no-any-return]


def test_running_and_healthy() -> None:
    d = doc([r(1), r(2)])
    assert d["app_status"]["status"] == "RUNNING"  # type: ignore[index]
    assert dep(d)["status"] == "HEALTHY"
    assert dep(d)["status_trigger"] == "CONFIG_UPDATE_COMPLETED"
    assert dep(d)["replica_states"] == {"RUNNING": 2}


def test_deploying_while_updating() -> None:
    d = doc([r(1), r(2, "STARTING")])
    assert d["app_status"]["status"] == "DEPLOYING"  # type: ignore[index]
    assert (dep(d)["status"], dep(d)["status_trigger"]) == ("UPDATING", "CONFIG_UPDATE_STARTED")


def test_a_few_failed_starts_keep_updating_with_the_reason() -> None:
    health = DeploymentHealth(message="replica r1 failed to start: ValueError: boom",
                              consecutive_failures=5, new_failure="startup")
    d = doc([], health)
    assert d["app_status"]["status"] == "DEPLOYING"  # type: ignore[index]
    assert dep(d)["status"] == "UPDATING"
    assert "ValueError: boom" in dep(d)["message"]  # type: ignore[operator]


def test_three_failed_starts_per_replica_are_deploy_failed() -> None:
    health = DeploymentHealth(message="replica r1 failed to start: ValueError: boom",
                              consecutive_failures=6, new_failure="startup")
    d = doc([], health)
    assert d["app_status"]["status"] == "DEPLOY_FAILED"  # type: ignore[index]
    assert "ValueError: boom" in d["app_status"]["message"]  # type: ignore[index]
    assert (dep(d)["status"], dep(d)["status_trigger"]) == ("DEPLOY_FAILED",
                                                            "REPLICA_STARTUP_FAILED")


def test_crash_after_healthy_is_unhealthy_then_recovers() -> None:
    healthy = StatusInfo("HEALTHY", "CONFIG_UPDATE_COMPLETED", "", "v1", 2)
    health = DeploymentHealth(message="replica r2 died unexpectedly", new_failure="health")
    d = doc([r(1), r(2, "DEAD")], health, healthy)
    assert d["app_status"]["status"] == "UNHEALTHY"  # type: ignore[index]
    assert (dep(d)["status"], dep(d)["status_trigger"]) == ("UNHEALTHY", "HEALTH_CHECK_FAILED")
    assert "died unexpectedly" in dep(d)["message"]  # type: ignore[operator]
    unhealthy = StatusInfo("UNHEALTHY", "HEALTH_CHECK_FAILED", "x", "v1", 2)
    d = doc([r(1), r(3)], DeploymentHealth(), unhealthy)
    assert (dep(d)["status"], dep(d)["status_trigger"]) == ("HEALTHY", "UNSPECIFIED")
    assert d["app_status"]["status"] == "RUNNING"  # type: ignore[index]


def test_build_states() -> None:
    assert doc([], built=False)["app_status"]["status"] == "DEPLOYING"  # type: ignore[index]
    failed = doc([], built=False, build_error="failed to import 'nope:app'")
    assert failed["app_status"] == {"status": "DEPLOY_FAILED",
                                    "message": "failed to import 'nope:app'",
                                    "deployment_timestamp": 1.0}


def test_scaling_a_healthy_version_by_config_is_upscaling_and_the_app_deploys() -> None:
    healthy = StatusInfo("HEALTHY", "CONFIG_UPDATE_COMPLETED", "", "v1", 1)
    d = doc([r(1), r(2, "STARTING")], None, healthy)
    # Ray: a manual change of num_replicas is a config update (the app is DEPLOYING).
    assert (dep(d)["status"], dep(d)["status_trigger"]) == ("UPSCALING", "CONFIG_UPDATE_STARTED")
    assert dep(d)["message"] == "Upscaling from 1 to 2 replicas"
    assert d["app_status"]["status"] == "DEPLOYING"  # type: ignore[index]
    done = StatusInfo("UPSCALING", "CONFIG_UPDATE_STARTED", "", "v1", 2)
    d = doc([r(1), r(2)], None, done)
    assert (dep(d)["status"], dep(d)["status_trigger"]) == ("HEALTHY", "UPSCALE_COMPLETED")


def test_autoscaling_keeps_the_app_running() -> None:
    view = AppView(name="app", deployment_timestamp=1.0, built=True, deployments=["D"])
    healthy = StatusInfo("HEALTHY", "CONFIG_UPDATE_COMPLETED", "", "v1", 3)
    out, statuses = status_document([view], {KEY: T}, [r(1), r(2), r(3, "STOPPING")],
                                    {KEY: DeploymentHealth()}, {KEY: healthy},
                                    autoscaled={KEY})
    d = out["app"]
    assert d["app_status"]["status"] == "RUNNING"
    # r3 is not stopping yet in this view: still DOWNSCALING, though 2 run.
    assert (statuses[KEY].status, statuses[KEY].status_trigger) in {
        ("DOWNSCALING", "AUTOSCALING"), ("HEALTHY", "DOWNSCALE_COMPLETED")}


def test_a_new_version_is_updating_even_when_it_scales() -> None:
    healthy = StatusInfo("HEALTHY", "CONFIG_UPDATE_COMPLETED", "", "v0", 1)
    d = doc([r(1, version="v0"), r(2, "STARTING")], None, healthy)
    assert (dep(d)["status"], dep(d)["status_trigger"]) == ("UPDATING", "CONFIG_UPDATE_STARTED")


def test_a_deleted_app_is_deleting_while_its_replicas_stop() -> None:
    out, statuses = status_document([], {}, [ReplicaView("r1", "gone", "D", "v1", "RUNNING",
                                                         stopping=True)], {}, {})
    assert out["gone"]["app_status"]["status"] == "DELETING"
    assert out["gone"]["deployment_statuses"][0]["status_trigger"] == "DELETING"
    assert out["gone"]["deployment_statuses"][0]["replica_states"] == {"STOPPING": 1}
    assert status_document([], {}, [], {}, statuses)[0] == {}


def test_autoscaled_deployments_show_their_decision() -> None:
    view = AppView(name="app", deployment_timestamp=1.0, built=True, deployments=["D"])
    shown = {"target_num_replicas": 2, "min_replicas": 0, "max_replicas": 4}
    out, _ = status_document([view], {KEY: T}, [r(1), r(2)], {KEY: DeploymentHealth()}, {},
                             autoscaling={KEY: shown})
    assert out["app"]["deployment_statuses"][0]["autoscaling"] == shown
