"""Status roll-up as a pure function, with the seed's meanings."""

from weir.controller.health import DeploymentHealth
from weir.controller.reconciler import DeploymentTarget, ReplicaView
from weir.controller.status import AppView, status_document

T = DeploymentTarget("app", "D", "v1", 2, "null")


def doc(replicas: list[ReplicaView], health: DeploymentHealth | None = None,
        ever: bool = False, **app: object) -> dict[str, object]:
    view = AppView(name="app", deployment_timestamp=1.0, built=app.pop("built", True),  # type: ignore[arg-type]
                   build_error=app.pop("build_error", ""), deployments=["D"])  # type: ignore[arg-type]
    out, _ = status_document([view], {("app", "D"): T}, replicas,
                             {("app", "D"): health or DeploymentHealth()}, {"app": ever})
    return out["app"]  # type: ignore[no-any-return]


def r(i: int, state: str = "RUNNING", version: str = "v1") -> ReplicaView:
    return ReplicaView(f"r{i}", "app", "D", version, state)


def test_running_and_healthy() -> None:
    d = doc([r(1), r(2)])
    assert d["app_status"]["status"] == "RUNNING"  # type: ignore[index]
    assert d["deployment_statuses"][0]["status"] == "HEALTHY"  # type: ignore[index]
    assert d["deployment_statuses"][0]["replica_states"] == {"RUNNING": 2}  # type: ignore[index]


def test_deploying_while_updating() -> None:
    d = doc([r(1), r(2, "STARTING")])
    assert d["app_status"]["status"] == "DEPLOYING"  # type: ignore[index]
    assert d["deployment_statuses"][0]["status"] == "UPDATING"  # type: ignore[index]


def test_constructor_failure_is_deploy_failed_with_reason() -> None:
    health = DeploymentHealth(message="replica r1 failed to start: ValueError: boom")
    d = doc([], health)
    assert d["app_status"]["status"] == "DEPLOY_FAILED"  # type: ignore[index]
    assert "ValueError: boom" in d["app_status"]["message"]  # type: ignore[index]
    assert d["deployment_statuses"][0]["status"] == "UNHEALTHY"  # type: ignore[index]


def test_crash_after_running_keeps_app_running_deployment_unhealthy() -> None:
    health = DeploymentHealth(message="replica r2 died unexpectedly")
    d = doc([r(1)], health, ever=True)
    assert d["app_status"]["status"] == "RUNNING"  # type: ignore[index]
    assert d["deployment_statuses"][0]["status"] == "UNHEALTHY"  # type: ignore[index]


def test_build_states() -> None:
    assert doc([], built=False)["app_status"]["status"] == "DEPLOYING"  # type: ignore[index]
    failed = doc([], built=False, build_error="failed to import 'nope:app'")
    assert failed["app_status"] == {"status": "DEPLOY_FAILED",
                                    "message": "failed to import 'nope:app'",
                                    "deployment_timestamp": 1.0}


def test_replica_lost_after_healthy_is_unhealthy_not_updating() -> None:
    health = DeploymentHealth(healthy_version="v1", healthy_replicas=2)
    d = doc([r(1), r(2, "DEAD")], health, ever=True)
    assert d["app_status"]["status"] == "RUNNING"  # type: ignore[index]
    assert d["deployment_statuses"][0]["status"] == "UNHEALTHY"  # type: ignore[index]
    assert "1 of 2 replicas running" in d["deployment_statuses"][0]["message"]  # type: ignore[index]


def test_scaling_a_healthy_version_is_upscaling_and_the_app_keeps_running() -> None:
    health = DeploymentHealth(healthy_version="v1", healthy_replicas=1)
    d = doc([r(1), r(2, "STARTING")], health, ever=True)
    assert d["app_status"]["status"] == "RUNNING"  # type: ignore[index]
    assert d["deployment_statuses"][0]["status"] == "UPSCALING"  # type: ignore[index]
    assert d["deployment_statuses"][0]["message"] == "Upscaling from 1 to 2 replicas"  # type: ignore[index]


def test_a_new_version_is_updating_even_when_it_scales() -> None:
    health = DeploymentHealth(healthy_version="v0", healthy_replicas=1)
    d = doc([r(1), r(2, "STARTING")], health, ever=True)
    assert d["deployment_statuses"][0]["status"] == "UPDATING"  # type: ignore[index]


def test_autoscaled_deployments_show_their_decision() -> None:
    view = AppView(name="app", deployment_timestamp=1.0, built=True, deployments=["D"])
    shown = {"target_num_replicas": 2, "min_replicas": 0, "max_replicas": 4}
    out, _ = status_document([view], {("app", "D"): T}, [r(1), r(2)],
                             {("app", "D"): DeploymentHealth()}, {"app": True},
                             autoscaling={("app", "D"): shown})
    assert out["app"]["deployment_statuses"][0]["autoscaling"] == shown
