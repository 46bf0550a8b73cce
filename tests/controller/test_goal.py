"""Deployment plans from an app's goal: how the decorator's options and a config entry's
decide between a fixed num_replicas and autoscaling."""

from __future__ import annotations

from typing import Any

from weir.build import BuiltApp, DeploymentSpec
from weir.controller.goal import AppGoal, DeploymentPlan, deployment_plans

SCALED = {"min_replicas": 0, "max_replicas": 4, "initial_replicas": 2}


def plan(decorator: dict[str, Any], entry: dict[str, Any] | None = None) -> DeploymentPlan:
    spec = DeploymentSpec("app", "D", decorator, b"code", ingress=True)
    config: dict[str, Any] = {"name": "app"}
    if entry is not None:
        config["deployments"] = [{"name": "D", **entry}]
    goal = AppGoal(name="app", config=config, deployment_timestamp=1.0, build_key="k",
                   built_json=BuiltApp("app", [spec]).to_json())
    [out] = deployment_plans(goal)
    return out


def test_an_autoscaled_deployment_starts_with_its_initial_replicas() -> None:
    p = plan({"autoscaling_config": SCALED})
    assert p.autoscaling is not None and p.autoscaling.max_replicas == 4
    assert p.target.num_replicas == 2
    auto = plan({"num_replicas": "auto"})
    assert auto.autoscaling is not None and auto.autoscaling.max_replicas == 100
    assert auto.target.num_replicas == 1


def test_a_config_entry_picks_the_way_of_scaling_over_the_decorator() -> None:
    pinned = plan({"autoscaling_config": SCALED}, {"num_replicas": 3})
    assert pinned.autoscaling is None and pinned.target.num_replicas == 3
    scaled = plan({"num_replicas": 3}, {"autoscaling_config": SCALED})
    assert scaled.autoscaling is not None and scaled.target.num_replicas == 2
    # Neither way set in the entry: the decorator's stands.
    assert plan({"num_replicas": 3}, {"max_ongoing_requests": 2}).target.num_replicas == 3


def test_autoscaling_config_changes_keep_the_version() -> None:
    assert (plan({"autoscaling_config": SCALED}).target.version
            == plan({"num_replicas": 5}, {"autoscaling_config": {"max_replicas": 9}})
            .target.version)


def test_an_invalid_autoscaling_config_from_an_older_goal_keeps_num_replicas() -> None:
    p = plan({"autoscaling_config": {"max_replicas": 0}})
    assert p.autoscaling is None and p.target.num_replicas == 1


def test_an_applications_logging_config_reaches_its_deployments_unless_they_set_one() -> None:
    def options(decorator: dict[str, Any]) -> dict[str, Any]:
        spec = DeploymentSpec("app", "D", decorator, b"code", ingress=True)
        goal = AppGoal(name="app", config={"name": "app",
                                           "logging_config": {"log_level": "DEBUG"}},
                       deployment_timestamp=1.0, build_key="k",
                       built_json=BuiltApp("app", [spec]).to_json())
        return deployment_plans(goal)[0].options

    assert options({})["logging_config"]["log_level"] == "DEBUG"
    own = options({"logging_config": {"log_level": "ERROR"}})
    assert own["logging_config"]["log_level"] == "ERROR"
