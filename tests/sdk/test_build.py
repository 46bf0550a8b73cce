"""A deployment's version: what restarts its replicas and what does not."""

from __future__ import annotations

from typing import Any

import pytest

from weir.build import DeploymentSpec, definition_version
from weir.config.deployment_options import merge_deployment_options

SPEC = DeploymentSpec(app="app", name="Model", options={}, definition=b"pickled class")


def version(**decorator: Any) -> str:
    return definition_version(SPEC, merge_deployment_options(decorator), extra="build-key")


@pytest.mark.parametrize("change", [
    {"num_replicas": 5}, {"user_config": {"a": 2}}, {"autoscaling_config": {"max_replicas": 3}},
    {"placement_group_bundles": [{"CPU": 1}]}, {"graceful_shutdown_wait_loop_s": 5.0},
    {"placement_group_strategy": "SPREAD"},
])
def test_lightweight_and_ignored_options_keep_the_version(change: dict[str, Any]) -> None:
    assert version(**change) == version()


@pytest.mark.parametrize("change", [
    {"max_ongoing_requests": 6}, {"max_queued_requests": 10}, {"health_check_period_s": 1.0},
    {"graceful_shutdown_timeout_s": 1.0}, {"ray_actor_options": {"num_cpus": 2}},
])
def test_other_options_change_the_version(change: dict[str, Any]) -> None:
    assert version(**change) != version()


def test_code_and_build_inputs_change_the_version() -> None:
    options = merge_deployment_options({})
    other = DeploymentSpec(app="app", name="Model", options={}, definition=b"other class")
    assert definition_version(other, options, "build-key") != version()
    assert definition_version(SPEC, options, "another-key") != version()
