"""Autoscaling options: Ray Serve's names and defaults, "auto", the old name, and the rule
that num_replicas and autoscaling_config are one choice."""

from __future__ import annotations

import warnings

import pytest

from weir.config import autoscaling
from weir.config.autoscaling import (
    AutoscalingConfig,
    autoscaling_of,
    check_autoscaling_config,
    parse_autoscaling_config,
    scaling_options,
    without_scaling_of,
)


def test_defaults_are_ray_serves() -> None:
    c = AutoscalingConfig()
    assert (c.min_replicas, c.initial_replicas, c.max_replicas) == (1, None, 1)
    assert c.target_ongoing_requests == 2.0
    assert (c.upscale_delay_s, c.downscale_delay_s, c.downscale_to_zero_delay_s) == (
        30.0, 600.0, None)
    assert (c.metrics_interval_s, c.look_back_period_s) == (10.0, 30.0)
    assert (c.smoothing_factor, c.upscaling_factor, c.downscaling_factor) == (1.0, None, None)
    assert (c.upscale_smoothing_factor, c.downscale_smoothing_factor) == (None, None)
    assert (c.upscale_gain, c.downscale_gain, c.to_zero_delay_s) == (1.0, 1.0, 600.0)


def test_gains_prefer_the_new_names_then_the_old_ones() -> None:
    c = AutoscalingConfig(smoothing_factor=0.5, upscale_smoothing_factor=2.0,
                          downscaling_factor=0.25)
    assert (c.upscale_gain, c.downscale_gain) == (2.0, 0.25)
    assert AutoscalingConfig(smoothing_factor=0.5).downscale_gain == 0.5


def test_auto_is_rays_defaults_under_what_autoscaling_config_sets() -> None:
    auto = autoscaling_of({"num_replicas": "auto", "autoscaling_config": None})
    assert auto is not None
    assert (auto.min_replicas, auto.max_replicas, auto.target_ongoing_requests) == (1, 100, 2.0)
    tuned = autoscaling_of({"num_replicas": "auto", "autoscaling_config": {"max_replicas": 7}})
    assert tuned is not None and (tuned.min_replicas, tuned.max_replicas) == (1, 7)
    assert autoscaling_of({"num_replicas": 3, "autoscaling_config": None}) is None


@pytest.mark.parametrize(("given", "problem"), [
    ({"max_replicas": 0}, "max_replicas: must be greater than or equal to 1 (got 0)"),
    ({"min_replicas": -1}, "min_replicas: must be greater than or equal to 0 (got -1)"),
    ({"min_replicas": 3}, "max_replicas (1) must be greater than or equal to min_replicas (3)"),
    ({"initial_replicas": 5, "max_replicas": 3}, "initial_replicas (5) must lie between"),
    ({"target_ongoing_requests": 0}, "target_ongoing_requests: must be greater than 0"),
    ({"upscale_delay_s": -1}, "upscale_delay_s: must be greater than or equal to 0"),
    ({"aggregation_function": "median"}, "aggregation_function: must be 'mean', 'max' or"),
    ({"min_replcas": 0}, "min_replcas: unknown field (did you mean min_replicas?)"),
])
def test_each_bad_field_is_named(given: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_autoscaling_config(given)
    assert problem in str(info.value)


def test_old_target_name_is_read_as_the_new_one_with_a_warning() -> None:
    autoscaling._warned_old_name.clear()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        checked = check_autoscaling_config(
            {"target_num_ongoing_requests_per_replica": 3, "max_replicas": 4})
    assert checked == {"target_ongoing_requests": 3, "max_replicas": 4}
    assert [w.category for w in seen] == [FutureWarning]
    assert "target_ongoing_requests" in str(seen[0].message)
    with pytest.raises(ValueError, match="give only target_ongoing_requests"):
        check_autoscaling_config({"target_num_ongoing_requests_per_replica": 3,
                                  "target_ongoing_requests": 1})


def test_a_layer_that_sets_one_way_of_scaling_replaces_both_below_it() -> None:
    decorator = {"num_replicas": 2, "max_ongoing_requests": 3}
    assert without_scaling_of(decorator, {"autoscaling_config": {"max_replicas": 4}}) == {
        "max_ongoing_requests": 3}
    assert without_scaling_of(decorator, {"user_config": {}}) == decorator
    assert without_scaling_of(decorator, None) == decorator


def test_a_new_deployment_starts_with_initial_replicas_else_min_replicas() -> None:
    assert AutoscalingConfig(min_replicas=0, max_replicas=4, initial_replicas=2
                             ).start_replicas == 2
    assert AutoscalingConfig(min_replicas=0, max_replicas=4).start_replicas == 0


def test_a_complete_config_writes_one_way_of_scaling() -> None:
    assert scaling_options({"num_replicas": 2, "autoscaling_config": None}) == {
        "num_replicas": 2}
    assert scaling_options({"num_replicas": 1, "autoscaling_config": {"max_replicas": 3}}) == {
        "autoscaling_config": {"max_replicas": 3}}
    assert scaling_options({"num_replicas": "auto", "autoscaling_config": None}) == {
        "num_replicas": "auto"}
