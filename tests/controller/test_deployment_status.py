"""The deployment status machine (Ray's transitions) and the events a pass derives."""

import pytest

from weir.controller import deployment_status as ds
from weir.controller.deployment_status import StatusInfo, advance, transition
from weir.controller.health import DeploymentHealth
from weir.controller.reconciler import DeploymentTarget, ReplicaView


def at(status: str, trigger: str) -> StatusInfo:
    return StatusInfo(status, trigger, "", "v1", 1)


@pytest.mark.parametrize(("start", "event", "end"), [
    (("UPDATING", "CONFIG_UPDATE_STARTED"), "HEALTHY", ("HEALTHY", "CONFIG_UPDATE_COMPLETED")),
    (("UPDATING", "CONFIG_UPDATE_STARTED"), "REPLICA_STARTUP_FAILED",
     ("DEPLOY_FAILED", "REPLICA_STARTUP_FAILED")),
    (("UPDATING", "CONFIG_UPDATE_STARTED"), "HEALTH_CHECK_FAILED",
     ("DEPLOY_FAILED", "HEALTH_CHECK_FAILED")),
    (("UPDATING", "CONFIG_UPDATE_STARTED"), "MANUALLY_INCREASE_NUM_REPLICAS",
     ("UPDATING", "CONFIG_UPDATE_STARTED")),
    (("UPDATING", "CONFIG_UPDATE_STARTED"), "AUTOSCALE_UP", ("UPSCALING", "AUTOSCALING")),
    (("HEALTHY", "CONFIG_UPDATE_COMPLETED"), "CONFIG_UPDATE",
     ("UPDATING", "CONFIG_UPDATE_STARTED")),
    (("HEALTHY", "CONFIG_UPDATE_COMPLETED"), "AUTOSCALE_DOWN", ("DOWNSCALING", "AUTOSCALING")),
    (("HEALTHY", "CONFIG_UPDATE_COMPLETED"), "MANUALLY_INCREASE_NUM_REPLICAS",
     ("UPSCALING", "CONFIG_UPDATE_STARTED")),
    (("HEALTHY", "CONFIG_UPDATE_COMPLETED"), "HEALTH_CHECK_FAILED",
     ("UNHEALTHY", "HEALTH_CHECK_FAILED")),
    (("HEALTHY", "CONFIG_UPDATE_COMPLETED"), "REPLICA_STARTUP_FAILED",
     ("HEALTHY", "CONFIG_UPDATE_COMPLETED")),
    (("UPSCALING", "AUTOSCALING"), "HEALTHY", ("HEALTHY", "UPSCALE_COMPLETED")),
    (("DOWNSCALING", "AUTOSCALING"), "HEALTHY", ("HEALTHY", "DOWNSCALE_COMPLETED")),
    (("UPSCALING", "AUTOSCALING"), "AUTOSCALE_DOWN", ("DOWNSCALING", "AUTOSCALING")),
    (("UPSCALING", "AUTOSCALING"), "MANUALLY_DECREASE_NUM_REPLICAS",
     ("DOWNSCALING", "CONFIG_UPDATE_STARTED")),
    (("UPSCALING", "CONFIG_UPDATE_STARTED"), "AUTOSCALE_DOWN",
     ("DOWNSCALING", "CONFIG_UPDATE_STARTED")),
    (("UPSCALING", "AUTOSCALING"), "REPLICA_STARTUP_FAILED",
     ("UNHEALTHY", "REPLICA_STARTUP_FAILED")),
    (("UNHEALTHY", "HEALTH_CHECK_FAILED"), "HEALTHY", ("HEALTHY", "UNSPECIFIED")),
    (("DEPLOY_FAILED", "REPLICA_STARTUP_FAILED"), "HEALTHY", ("HEALTHY", "UNSPECIFIED")),
    (("DEPLOY_FAILED", "REPLICA_STARTUP_FAILED"), "HEALTH_CHECK_FAILED",
     ("DEPLOY_FAILED", "HEALTH_CHECK_FAILED")),
    (("DEPLOY_FAILED", "REPLICA_STARTUP_FAILED"), "CONFIG_UPDATE",
     ("UPDATING", "CONFIG_UPDATE_STARTED")),
    (("HEALTHY", "CONFIG_UPDATE_COMPLETED"), "DELETE", ("UPDATING", "DELETING")),
    (("UPSCALING", "AUTOSCALING"), "INTERNAL_ERROR", ("UNHEALTHY", "INTERNAL_ERROR")),
])
def test_transitions_follow_ray(start: tuple[str, str], event: str,
                                end: tuple[str, str]) -> None:
    after = transition(at(*start), event, "why")
    assert (after.status, after.status_trigger) == end


def test_an_ignored_event_keeps_the_message() -> None:
    info = StatusInfo("HEALTHY", "CONFIG_UPDATE_COMPLETED", "kept", "v1", 1)
    assert transition(info, "REPLICA_STARTUP_FAILED", "new") is info


T = DeploymentTarget("app", "D", "v1", 1, "null")


def test_startup_failures_count_to_three_per_replica_then_deploy_failed() -> None:
    info = None
    statuses = []
    for n in range(1, 5):
        health = DeploymentHealth(version="v1", message="boom", consecutive_failures=n,
                                  new_failure="startup")
        info = advance(info, T, [], health)
        statuses.append(info.status)
    assert statuses == ["UPDATING", "UPDATING", "DEPLOY_FAILED", "DEPLOY_FAILED"]
    assert ds.startup_failure_threshold(100) == ds.MAX_CONSTRUCTOR_RETRY_COUNT
    # Then a replica runs after all: the deployment recovers.
    info = advance(info, T, [ReplicaView("r", "app", "D", "v1", "RUNNING")], DeploymentHealth())
    assert (info.status, info.status_trigger) == ("HEALTHY", "UNSPECIFIED")


def test_a_new_leader_reports_a_complete_deployment_healthy_in_its_first_pass() -> None:
    info = advance(None, T, [ReplicaView("r", "app", "D", "v1", "RUNNING")], DeploymentHealth())
    assert (info.status, info.status_trigger) == ("HEALTHY", "CONFIG_UPDATE_COMPLETED")


def test_autoscaler_changes_are_autoscaling_and_config_changes_are_not() -> None:
    healthy = StatusInfo("HEALTHY", "CONFIG_UPDATE_COMPLETED", "", "v1", 1)
    two = DeploymentTarget("app", "D", "v1", 2, "null")
    running = [ReplicaView("r", "app", "D", "v1", "RUNNING")]
    auto = advance(healthy, two, running, DeploymentHealth(), autoscaled=True)
    assert (auto.status, auto.status_trigger) == ("UPSCALING", "AUTOSCALING")
    manual = advance(healthy, two, running, DeploymentHealth())
    assert (manual.status, manual.status_trigger) == ("UPSCALING", "CONFIG_UPDATE_STARTED")


def test_a_healthy_deployment_that_loses_a_replica_unseen_is_unhealthy() -> None:
    healthy = StatusInfo("HEALTHY", "CONFIG_UPDATE_COMPLETED", "", "v1", 2)
    two = DeploymentTarget("app", "D", "v1", 2, "null")
    info = advance(healthy, two, [ReplicaView("r", "app", "D", "v1", "RUNNING")],
                   DeploymentHealth())
    assert (info.status, info.status_trigger) == ("UNHEALTHY", "HEALTH_CHECK_FAILED")
    assert info.message == "1 of 2 replicas running; replacing the others"
