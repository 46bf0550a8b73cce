"""The registry of Ray options Weir ignores: warned once by name, refused typos, config
files scanned, and the registry agreeing with the schema and docs/compatibility.md."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.sdk.ray_warnings import caught, fresh_registry  # noqa: F401
from weir.config import ray_options
from weir.config.config_file import dump_config, parse_config
from weir.config.ray_options import (
    APPLICATION,
    CONFIG,
    DEPLOYMENT,
    HANDLE_OPTIONS,
    IGNORED,
    ignored_in_config,
    refuse_unknown,
    warn_ignored,
    warn_ignored_in_config,
)
from weir.config.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema
from weir.exceptions import IgnoredRayOptionWarning

ROOT = Path(__file__).resolve().parents[3]




# ----------------------------------------------------------------- warn_ignored


def test_each_name_warns_once_with_its_reason() -> None:
    seen = caught(lambda: [warn_ignored(DEPLOYMENT, {"placement_group_bundles": [{"CPU": 1}]})
                           for _ in range(3)])
    assert len(seen) == 1
    message = str(seen[0].message)
    assert message.startswith("Weir ignores the deployment option 'placement_group_bundles': ")
    assert "no placement groups" in message and "docs/compatibility.md" in message
    assert len(caught(lambda: warn_ignored(DEPLOYMENT, {"placement_group_strategy": "PACK"}))) \
        == 1, "another name warns on its own"


def test_none_and_options_weir_acts_on_do_not_warn() -> None:
    assert caught(lambda: warn_ignored(DEPLOYMENT, {"placement_group_bundles": None,
                                                    "num_replicas": 3,
                                                    "ray_actor_options": {"num_cpus": 2}})) == []
    # None did not use up the name's one warning.
    assert len(caught(lambda: warn_ignored(DEPLOYMENT, {"placement_group_bundles": []}))) == 1


def test_a_name_warns_once_per_scope() -> None:
    seen = caught(lambda: [warn_ignored(ray_options.CONFIG, {"proxy_location": "HeadOnly"}),
                           warn_ignored(ray_options.START, {"proxy_location": "HeadOnly"}),
                           warn_ignored(ray_options.CONFIG, {"proxy_location": "HeadOnly"})])
    assert [str(w.message).split(":")[0] for w in seen] == [
        "Weir ignores the config file option 'proxy_location'",
        "Weir ignores the serve.start() option 'proxy_location'"]


def test_the_warning_points_at_the_callers_line() -> None:
    def api() -> None:
        warn_ignored(HANDLE_OPTIONS, {"_by_reference": True}, stacklevel=2)

    [seen] = caught(lambda: api())  # the lambda is the "user's" line
    assert seen.filename == __file__


def test_users_can_filter_the_category() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=IgnoredRayOptionWarning)
        warn_ignored(DEPLOYMENT, {"logging_config": {"log_level": "DEBUG"}})
    assert seen == []


# ----------------------------------------------------------------- refuse_unknown


def _api(target: Any, blocking: bool = False, name: str = "default", *,
         route_prefix: str = "/", **unexpected: Any) -> None:
    refuse_unknown("serve.run", _api, unexpected)


def test_unknown_keywords_are_refused_by_name_with_the_accepted_ones() -> None:
    with pytest.raises(TypeError) as info:
        _api(None, nmae="x")
    assert str(info.value) == (
        "serve.run() got unexpected keyword argument 'nmae' (did you mean 'name'?); it "
        "accepts: target, blocking, name, route_prefix")
    with pytest.raises(TypeError, match=r"arguments 'routeprefix' \(did you mean "
                                        r"'route_prefix'\?\), 'zzz';"):
        _api(None, routeprefix="/a", zzz=1)
    _api(None, name="x", route_prefix="/x")


# ----------------------------------------------------------------- config files

EVERYTHING_IGNORED = """\
proxy_location: HeadOnly
logging_config: {log_level: DEBUG}
target_capacity: 50
http_options: {root_path: /api, keep_alive_timeout_s: 90, ssl_keyfile: /k.pem,
               ssl_certfile: /c.pem, ssl_keyfile_password: pw, ssl_ca_certs: /ca.pem}
grpc_options: {request_timeout_s: 5}
applications:
- import_path: mod:app
  logging_config: {encoding: JSON}
  external_scaler_enabled: true
  runtime_env: {pip: [numpy]}
  host: 127.0.0.1
  port: 8001
  autoscaling_policy: {policy_function: mod:policy}
  deployments:
  - name: A
    ray_actor_options: {num_cpus: 1}
    placement_group_bundles: [{CPU: 1}]
    placement_group_strategy: SPREAD
    max_replicas_per_node: 1
    autoscaling_config: {max_replicas: 3}
    logging_config: {log_level: INFO}
    graceful_shutdown_wait_loop_s: 5
    request_router_config: {request_router_class: m:R}
    max_constructor_retry_count: 3
  - name: B
    num_replicas: 2
"""


def test_every_ignored_field_of_a_config_is_found_with_its_path() -> None:
    found = ignored_in_config(parse_config(EVERYTHING_IGNORED))
    expected = [(CONFIG, name, name) for name in IGNORED[CONFIG]]
    expected += [(APPLICATION, name, f"applications[0].{name}") for name in IGNORED[APPLICATION]]
    expected += [(DEPLOYMENT, name, f"applications[0].deployments[0].{name}")
                 for name in IGNORED[DEPLOYMENT]]
    assert sorted(found) == sorted(expected)


def test_defaults_written_out_ask_for_nothing() -> None:
    # `weir build` writes every default; such a file must not warn.
    config = parse_config({"applications": [{"import_path": "mod:app", "deployments": [
        {"name": "A", "graceful_shutdown_wait_loop_s": 2.0}]}]})
    written = parse_config(dump_config(config))
    assert "proxy_location" in written.model_fields_set
    assert ignored_in_config(written) == []


def test_config_warnings_name_every_path_once() -> None:
    doc = yaml.safe_load(EVERYTHING_IGNORED)
    doc["applications"][0]["deployments"][1]["placement_group_strategy"] = "PACK"
    seen = caught(lambda: warn_ignored_in_config(parse_config(doc)))
    messages = [str(w.message) for w in seen]
    assert len(messages) == len(IGNORED[CONFIG]) + len(IGNORED[APPLICATION]) + len(
        IGNORED[DEPLOYMENT])
    [strategy] = [m for m in messages if "'placement_group_strategy'" in m]
    assert ("(at applications[0].deployments[0].placement_group_strategy, "
            "applications[0].deployments[1].placement_group_strategy)") in strategy
    [location] = [m for m in messages if "'proxy_location'" in m]
    assert location.startswith("Weir ignores the config file option 'proxy_location': ")


# ----------------------------------------------------------------- the registry


def _field_path_exists(model: type[Any], dotted: str) -> bool:
    *parents, last = dotted.split(".")
    for part in parents:
        info = model.model_fields.get(part)
        if info is None:
            return False
        model = info.annotation
    return last in model.model_fields


def test_registry_names_fields_the_schema_accepts() -> None:
    for name in IGNORED[DEPLOYMENT]:
        assert name in DeploymentSchema.model_fields, name
    for name in IGNORED[APPLICATION]:
        assert _field_path_exists(ServeApplicationSchema, name), name
    for name in IGNORED[CONFIG]:
        assert _field_path_exists(ServeDeploySchema, name), name


def test_compatibility_doc_lists_every_ignored_option() -> None:
    doc = (ROOT / "docs" / "compatibility.md").read_text()
    rows = set(re.findall(r"^\| `([^`]+)` \| ([^|]+?) \|", doc, flags=re.MULTILINE))
    for scope, reasons in IGNORED.items():
        for name in reasons:
            assert (name, scope) in rows, f"docs/compatibility.md lacks `{name}` ({scope})"


#: Every field of Ray Serve's config schemas (its API reference, Ray 2.4x).
RAY_SCHEMA_FIELDS = {
    "ServeDeploySchema": {"proxy_location", "http_options", "grpc_options", "logging_config",
                          "applications", "target_capacity"},
    "ServeApplicationSchema": {"name", "route_prefix", "import_path", "runtime_env", "host",
                               "port", "deployments", "autoscaling_policy", "args",
                               "logging_config", "external_scaler_enabled"},
    "DeploymentSchema": {"name", "num_replicas", "max_ongoing_requests",
                         "max_queued_requests", "user_config", "autoscaling_config",
                         "graceful_shutdown_wait_loop_s", "graceful_shutdown_timeout_s",
                         "health_check_period_s", "health_check_timeout_s",
                         "ray_actor_options", "placement_group_bundles",
                         "placement_group_strategy", "max_replicas_per_node", "logging_config",
                         "request_router_config", "max_constructor_retry_count"},
    "HTTPOptionsSchema": {"host", "port", "root_path", "request_timeout_s",
                          "keep_alive_timeout_s", "ssl_keyfile", "ssl_certfile",
                          "ssl_keyfile_password", "ssl_ca_certs"},
    "GrpcOptionsSchema": {"port", "grpc_servicer_functions", "request_timeout_s"},
}


def test_every_field_of_rays_config_schemas_is_accepted() -> None:
    from weir.config import schema

    for model, fields in RAY_SCHEMA_FIELDS.items():
        missing = fields - set(getattr(schema, model).model_fields)
        assert not missing, f"{model} refuses Ray's {sorted(missing)}"


def test_a_dump_leaves_out_ray_only_fields_nobody_set() -> None:
    text = dump_config(parse_config({"applications": [{"import_path": "mod:app"}]}))
    doc = yaml.safe_load(text)
    assert "target_capacity" not in doc
    assert "ssl_keyfile" not in doc["http_options"]
    assert "request_timeout_s" not in doc["grpc_options"]
    assert not {"host", "port", "autoscaling_policy"} & set(doc["applications"][0])
    assert "target_capacity: 50" in dump_config(parse_config(EVERYTHING_IGNORED))
