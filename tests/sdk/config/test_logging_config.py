"""Ray's LoggingConfig: its rules, what it resolves to, and how the app's reaches deployments."""

from __future__ import annotations

import logging

import pytest

from weir.build import BuiltApp, DeploymentSpec, definition_version, with_app_logging_config
from weir.config.deployment_options import merge_deployment_options, validate_deployment_options
from weir.config.errors import ConfigError
from weir.config.logging_config import (
    LoggingSettings,
    check_logging_config,
    logging_settings,
    replica_log_file,
)
from weir.config.logging_settings import FIELDS
from weir.config.schema import ServeDeploySchema
from weir.serve.config import LoggingConfig


def test_defaults_are_rays() -> None:
    assert logging_settings(None) == LoggingSettings(
        json=False, level=logging.INFO, logs_dir=None, access_log=True, standard_attrs=())


def test_settings_from_names_and_numbers() -> None:
    s = logging_settings({"encoding": "JSON", "log_level": "debug", "logs_dir": "/l",
                          "enable_access_log": False, "additional_log_standard_attrs": ["lineno"]})
    assert s == LoggingSettings(json=True, level=logging.DEBUG, logs_dir="/l", access_log=False,
                                standard_attrs=("lineno",))
    assert logging_settings({"log_level": logging.WARNING}).level == logging.WARNING


def test_settings_follow_the_models_defaults_and_rules_without_it() -> None:
    # Server processes read logging_config without pydantic (weir.config.logging_settings):
    # the same defaults, and what the model refuses is refused by name.
    model = LoggingConfig()
    assert logging_settings({}) == logging_settings(model.model_dump())
    assert set(model.model_dump()) == FIELDS
    with pytest.raises(ValueError, match="no field 'colour'"):
        logging_settings({"colour": "red"})
    with pytest.raises(ValueError, match="encoding must be TEXT or JSON, not 'XML'"):
        logging_settings({"encoding": "XML"})
    with pytest.raises(ValueError, match=r"'nope' is not an attribute of logging\.LogRecord"):
        logging_settings({"additional_log_standard_attrs": ["nope"]})
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        logging_settings({"log_level": "LOUD"})


def test_a_model_becomes_the_mapping_of_the_fields_given() -> None:
    assert check_logging_config(LoggingConfig(encoding="JSON")) == {"encoding": "JSON"}
    assert validate_deployment_options(logging_config=LoggingConfig(log_level="DEBUG")) == {
        "logging_config": {"log_level": "DEBUG"}}


@pytest.mark.parametrize(("value", "says"), [
    ({"encoding": "XML"}, "encoding"),
    ({"log_level": "LOUD"}, "unknown log level 'LOUD'"),
    ({"additional_log_standard_attrs": ["nope"]}, "'nope' is not an attribute of logging"),
    ({"colour": True}, "colour"),
    ("JSON", "must be a LoggingConfig or a mapping"),
])
def test_bad_values_name_the_field(value: object, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_deployment_options(logging_config=value)
    assert says in str(info.value) and "logging_config" in str(info.value)


def test_a_config_file_checks_it_at_every_level() -> None:
    with pytest.raises(ValueError, match="encoding"):
        ServeDeploySchema.model_validate({"applications": [{
            "import_path": "m:a", "deployments": [
                {"name": "D", "logging_config": {"encoding": "XML"}}]}]})
    ok = ServeDeploySchema.model_validate({"applications": [{
        "import_path": "m:a", "logging_config": {"log_level": "DEBUG"}}]})
    assert ok.applications[0].logging_config == {"log_level": "DEBUG"}


def test_the_app_config_applies_where_the_deployment_sets_none() -> None:
    app_config = {"encoding": "JSON"}
    assert merge_deployment_options({}, None, app_config)["logging_config"] == app_config
    own = {"log_level": "DEBUG"}
    assert merge_deployment_options({"logging_config": own}, None,
                                    app_config)["logging_config"] == own
    assert merge_deployment_options({}, {"logging_config": own},
                                    app_config)["logging_config"] == own
    app = BuiltApp("a", [DeploymentSpec("a", "A", {}, b""),
                         DeploymentSpec("a", "B", {"logging_config": own}, b"")])
    stamped = with_app_logging_config(app, app_config)
    assert [d.options.get("logging_config") for d in stamped.deployments] == [app_config, own]
    assert with_app_logging_config(app, None) is app


def test_unset_it_leaves_the_version_alone() -> None:
    spec = DeploymentSpec("a", "A", {}, b"code")
    before = definition_version(spec, {"num_replicas": 1})
    assert definition_version(spec, merge_deployment_options({})) == definition_version(
        spec, {k: v for k, v in merge_deployment_options({}).items() if k != "logging_config"})
    assert definition_version(spec, {"num_replicas": 1, "logging_config": None}) == before
    assert definition_version(spec, {"num_replicas": 1,
                                     "logging_config": {"encoding": "JSON"}}) != before


def test_the_replica_log_file_is_named_as_rays() -> None:
    settings = logging_settings({"logs_dir": "/logs"})
    assert (replica_log_file(settings, "app", "My Model", "r1")
            == "/logs/replica_app_My_Model_r1.log")
    assert replica_log_file(logging_settings(None), "app", "D", "r1") is None
