"""`@serve.deployment` and `.options()`: defaults from the schema, Ray's ignored options
warn once by name at the user's line, and never fail."""

from __future__ import annotations

import pytest

from tests.sdk.ray_warnings import caught, fresh_registry  # noqa: F401
from weir.config.deployment_options import DEFAULT_DEPLOYMENT_OPTIONS
from weir.config.errors import ConfigError
from weir.deployment import DEFAULT_OPTIONS, deployment


class Model:
    def __call__(self) -> str:
        return "ok"


def test_defaults_are_the_schemas() -> None:
    assert DEFAULT_OPTIONS is DEFAULT_DEPLOYMENT_OPTIONS
    d = deployment(Model)
    assert d.options_set == {}
    assert d.options_full == dict(DEFAULT_DEPLOYMENT_OPTIONS)
    assert (d.num_replicas, d.max_ongoing_requests, d.max_queued_requests) == (1, 5, -1)


def test_decorator_warns_by_name_at_the_users_line() -> None:
    seen = caught(lambda: deployment(placement_group_bundles=[{"CPU": 1}],
                                     placement_group_strategy="SPREAD")(Model))
    assert sorted(str(w.message).split(":")[0] for w in seen) == [
        "Weir ignores the deployment option 'placement_group_bundles'",
        "Weir ignores the deployment option 'placement_group_strategy'"]
    assert {w.filename for w in seen} == {__file__}


def test_options_warn_once_per_name_and_keep_the_value() -> None:
    base = deployment(Model)
    first = caught(lambda: base.options(placement_group_strategy="SPREAD"))
    again = caught(lambda: base.options(placement_group_strategy="PACK",
                                        placement_group_bundles=[{"CPU": 1}]))
    assert [w.filename for w in first] == [__file__]
    assert [str(w.message).split(":")[0] for w in again] == [
        "Weir ignores the deployment option 'placement_group_bundles'"]
    d = base.options(placement_group_strategy="PACK", num_replicas=3)
    assert d.options_set == {"placement_group_strategy": "PACK", "num_replicas": 3}
    assert d.options_full["placement_group_strategy"] == "PACK"


def test_options_weir_acts_on_and_defaults_do_not_warn() -> None:
    assert caught(lambda: deployment(num_replicas=2, max_ongoing_requests=3,
                                     user_config={"a": 1})(Model)) == []
    # Ray's default for the wait loop asks for nothing Weir would not do.
    assert caught(lambda: deployment(graceful_shutdown_wait_loop_s=2.0)(Model)) == []
    assert len(caught(lambda: deployment(graceful_shutdown_wait_loop_s=5)(Model))) == 1


def test_a_typo_is_still_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"ray_actor_option: unknown option \(did you mean "
                                          r"ray_actor_options\?\)"):
        deployment(ray_actor_option={"num_cpus": 1})


def test_autoscaling_is_acted_on_and_does_not_warn() -> None:
    assert caught(lambda: deployment(autoscaling_config={"max_replicas": 4})(Model)) == []
    assert deployment(num_replicas="auto")(Model).num_replicas == "auto"


def test_options_setting_one_way_of_scaling_replaces_the_other() -> None:
    fixed = deployment(num_replicas=2)(Model)
    scaled = fixed.options(autoscaling_config={"min_replicas": 0, "max_replicas": 4})
    assert scaled.options_set == {"autoscaling_config": {"min_replicas": 0, "max_replicas": 4}}
    assert scaled.options(num_replicas=3).options_set == {"num_replicas": 3}
    # Other options leave the scaling alone.
    assert scaled.options(max_ongoing_requests=2).options_set["autoscaling_config"] == {
        "min_replicas": 0, "max_replicas": 4}
