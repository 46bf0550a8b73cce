"""The config schema: rules, error paths, the single-app form, dump/parse, merge and diff."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml

from weir.config.config_file import config_from_json, config_to_json, dump_config, parse_config
from weir.config.deployment_options import (
    DEFAULT_DEPLOYMENT_OPTIONS,
    IGNORED_DEPLOYMENT_OPTIONS,
    LIGHTWEIGHT_OPTIONS,
    merge_deployment_options,
    restarts_replicas,
    user_config_json,
    validate_deployment_options,
)
from weir.config.diff import diff_applications
from weir.config.errors import ConfigError
from weir.config.schema import (
    DeploymentSchema,
    GrpcOptionsSchema,
    HTTPOptionsSchema,
    RuntimeEnvSchema,
    ServeApplicationSchema,
    ServeDeploySchema,
)

SEED_SINGLE_APP = """\
import_path: fruit:deployment_graph

runtime_env: {}

deployments:

- name: MangoStand
  num_replicas: 2
  route_prefix: null
- name: OrangeStand
  user_config:
    price: 2
"""

FULL = """\
proxy_location: EveryNode
http_options:
  host: 0.0.0.0
  port: 8001
  request_timeout_s: 3
  middlewares: [starlette.middleware.gzip:GZipMiddleware]
grpc_options:
  port: 9001
  grpc_servicer_functions: [myapp.protos.add_servicer]
logging_config: {encoding: JSON}
applications:
- name: fruit
  route_prefix: /fruit
  import_path: fruit:deployment_graph
  runtime_env:
    working_dir: /srv/fruit
    env_vars: {MODE: prod}
    pip: [numpy]
  args: {color: red, sizes: [1, 2]}
  deployments:
  - name: MangoStand
    num_replicas: 2
    max_ongoing_requests: 5
    user_config: {price: 3, tags: [a, b]}
  - name: PearStand
    max_queued_requests: 0
    graceful_shutdown_timeout_s: 0
    ray_actor_options: {num_cpus: 1}
- name: internal
  route_prefix: null
  import_path: internal.app
  external_scaler_enabled: true
"""


def app_doc(**fields: Any) -> dict[str, Any]:
    return {"applications": [{"import_path": "mod:app", **fields}]}


def errors_of(source: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(source)
    return info.value.errors


def error_paths(source: Any) -> list[str]:
    return [path for path, _ in errors_of(source)]


# ----------------------------------------------------------------- DeploymentSchema


def test_deployment_defaults_are_ray_serves_and_only_set_fields_count() -> None:
    d = DeploymentSchema(name="A", num_replicas=3)
    assert (d.num_replicas, d.max_ongoing_requests, d.max_queued_requests) == (3, 5, -1)
    assert (d.health_check_period_s, d.health_check_timeout_s) == (10.0, 30.0)
    assert (d.graceful_shutdown_timeout_s, d.graceful_shutdown_wait_loop_s) == (20.0, 2.0)
    assert d.user_config is None and d.ray_actor_options is None
    assert d.autoscaling_config is None and d.logging_config is None
    assert d.model_fields_set == {"name", "num_replicas"}
    assert d.model_dump() == {"name": "A", "num_replicas": 3}


def test_deployment_equality_counts_which_fields_were_set() -> None:
    assert DeploymentSchema(name="A") != DeploymentSchema(name="A", max_ongoing_requests=5)
    assert DeploymentSchema(name="A", num_replicas=2) == DeploymentSchema(name="A",
                                                                         num_replicas=2)


def test_negative_num_replicas_names_the_field_path() -> None:
    doc = app_doc(deployments=[{"name": "A"}, {"name": "B", "num_replicas": -1}])
    assert errors_of(doc) == [(
        "applications[0].deployments[1].num_replicas",
        "must be greater than or equal to 0 (got -1)",
    )]
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert str(info.value) == ("applications[0].deployments[1].num_replicas: "
                               "must be greater than or equal to 0 (got -1)")


def test_zero_replicas_is_allowed() -> None:
    assert parse_config(app_doc(deployments=[{"name": "A", "num_replicas": 0}])) \
        .applications[0].deployments[0].num_replicas == 0


def test_unknown_field_is_rejected_with_a_suggestion() -> None:
    doc = app_doc(deployments=[{"name": "A", "nmu_replicas": 2}])
    [(path, message)] = errors_of(doc)
    assert path == "applications[0].deployments[0].nmu_replicas"
    assert message.startswith("unknown field")
    assert "num_replicas" in message


def test_ray_renamed_field_gets_its_new_name() -> None:
    [(_, message)] = errors_of(app_doc(deployments=[{"name": "A", "max_concurrent_queries": 1}]))
    assert "max_ongoing_requests" in message


@pytest.mark.parametrize(("field", "value", "message"), [
    ("num_replicas", "two", "must be a valid integer"),
    ("num_replicas", "2", "must be a valid integer"),
    ("num_replicas", True, "must be a valid integer"),
    ("num_replicas", 1.5, "must be a valid integer"),
    ("max_ongoing_requests", 0, "must be greater than or equal to 1"),
    ("max_queued_requests", -2, "must be greater than or equal to -1"),
    ("health_check_period_s", 0, "must be greater than 0"),
    ("health_check_period_s", "10", "must be a valid number"),
    ("health_check_timeout_s", -1.0, "must be greater than 0"),
    ("graceful_shutdown_timeout_s", -1, "must be greater than or equal to 0"),
    ("graceful_shutdown_wait_loop_s", 0, "must be greater than 0"),
    ("health_check_period_s", float("inf"), "must be a finite number"),
    ("user_config", [1, 2], "must be a valid dictionary"),
    ("user_config", {"when": object()}, "must be JSON-serializable"),
    ("user_config", {"x": float("nan")}, "must be JSON-serializable"),
    ("user_config", {"x": {1: "a"}}, "must be JSON-serializable"),
    ("ray_actor_options", "cpu", "must be a valid dictionary"),
    ("placement_group_strategy", "TIGHT", "must be 'PACK', 'SPREAD'"),
    ("max_replicas_per_node", 0, "must be greater than or equal to 1"),
    ("max_constructor_retry_count", -1, "must be greater than or equal to 0"),
    ("name", "", "must have at least 1 character"),
    ("name", 7, "must be a valid string"),
])
def test_deployment_field_rules(field: str, value: Any, message: str) -> None:
    entry = {"name": "A", field: value}
    [(path, got)] = errors_of(app_doc(deployments=[entry]))
    assert path == f"applications[0].deployments[0].{field}"
    assert got.startswith(message), got
    assert "(got " in got


@pytest.mark.parametrize(("field", "value"), [
    ("max_queued_requests", -1), ("max_queued_requests", 0), ("max_ongoing_requests", 1),
    ("graceful_shutdown_timeout_s", 0), ("health_check_period_s", 1),
    ("user_config", None), ("user_config", {"a": [1, {"b": None}], "c": 1.5}),
    ("ray_actor_options", {"num_cpus": 2}), ("logging_config", {"log_level": "DEBUG"}),
    ("autoscaling_config", {"min_replicas": 1, "max_replicas": 4}),
    ("placement_group_bundles", [{"CPU": 1}, {"GPU": 1}]),
    ("placement_group_strategy", "STRICT_PACK"), ("max_replicas_per_node", 2),
    ("request_router_config", {"request_router_class": "m:Router"}),
    ("max_constructor_retry_count", 3),
])
def test_deployment_field_values_accepted_and_stored(field: str, value: Any) -> None:
    d = parse_config(app_doc(deployments=[{"name": "A", field: value}])) \
        .applications[0].deployments[0]
    assert getattr(d, field) == value
    assert field in d.model_fields_set


def test_seconds_given_as_int_become_floats() -> None:
    d = DeploymentSchema(name="A", health_check_period_s=3)
    assert isinstance(d.health_check_period_s, float)


def test_num_replicas_auto_is_accepted_alone_or_with_autoscaling_config() -> None:
    entries = [{"name": "A", "num_replicas": "auto"},
               {"name": "B", "num_replicas": "auto", "autoscaling_config": {"max_replicas": 3}}]
    a, b = parse_config(app_doc(deployments=entries)).applications[0].deployments
    assert (a.num_replicas, a.autoscaling_config) == ("auto", None)
    assert b.model_dump() == {"name": "B", "num_replicas": "auto",
                              "autoscaling_config": {"max_replicas": 3}}


def test_num_replicas_with_autoscaling_config_is_refused_naming_both() -> None:
    entry = {"name": "A", "num_replicas": 2, "autoscaling_config": {"max_replicas": 3}}
    [(path, message)] = errors_of(app_doc(deployments=[entry]))
    assert path == "applications[0].deployments[0]"
    assert "num_replicas" in message and "autoscaling_config" in message


def test_autoscaling_config_errors_name_the_inner_field() -> None:
    entry = {"name": "A", "autoscaling_config": {"min_replicas": 4, "max_replicas": 2,
                                                 "upscale_dealy_s": 1}}
    [(path, message)] = errors_of(app_doc(deployments=[entry]))
    assert path == "applications[0].deployments[0].autoscaling_config"
    assert "upscale_dealy_s: unknown field (did you mean upscale_delay_s?)" in message


def test_deployment_route_prefix_only_as_null() -> None:
    parse_config(app_doc(deployments=[{"name": "A", "route_prefix": None}]))
    [(path, message)] = errors_of(app_doc(deployments=[{"name": "A", "route_prefix": "/a"}]))
    assert path.endswith("deployments[0].route_prefix")
    assert "set route_prefix on the application" in message


# ----------------------------------------------------------------- runtime_env


def test_runtime_env_fields_and_sparse_dump() -> None:
    env = RuntimeEnvSchema(working_dir="/srv", py_modules=["/lib"], env_vars={"A": "1"},
                           pip=["numpy==2"])
    assert env.pip == ["numpy==2"]
    assert RuntimeEnvSchema(working_dir="/srv").model_dump() == {"working_dir": "/srv"}
    assert RuntimeEnvSchema().model_dump() == {}


@pytest.mark.parametrize(("env", "path"), [
    ({"conda": "env.yaml"}, "applications[0].runtime_env.conda"),
    ({"env_vars": {"PORT": 8080}}, "applications[0].runtime_env.env_vars.PORT"),
    ({"py_modules": "/lib"}, "applications[0].runtime_env.py_modules"),
    ({"working_dir": 3}, "applications[0].runtime_env.working_dir"),
])
def test_runtime_env_rules(env: dict[str, Any], path: str) -> None:
    assert error_paths(app_doc(runtime_env=env)) == [path]


# ----------------------------------------------------------------- applications


def test_application_defaults() -> None:
    app = parse_config(app_doc()).applications[0]
    assert (app.name, app.route_prefix, app.args, app.deployments) == ("default", "/", {}, [])
    assert app.runtime_env == RuntimeEnvSchema()
    assert app.external_scaler_enabled is False


@pytest.mark.parametrize("prefix", ["/", "/api", "/api/v2", None])
def test_route_prefix_accepted(prefix: str | None) -> None:
    assert parse_config(app_doc(route_prefix=prefix)).applications[0].route_prefix == prefix


@pytest.mark.parametrize(("prefix", "message"), [
    ("api", 'must start with "/"'),
    ("", 'must start with "/"'),
    ("/api/", 'must not end with "/"'),
    ("/items/{id}", 'must not contain "{"'),
])
def test_route_prefix_refused(prefix: str, message: str) -> None:
    [(path, got)] = errors_of(app_doc(route_prefix=prefix))
    assert path == "applications[0].route_prefix"
    assert got.startswith(message) and f"(got {prefix!r})" in got


@pytest.mark.parametrize("name", ["", "a/b"])
def test_application_name_refused(name: str) -> None:
    assert error_paths(app_doc(name=name)) == ["applications[0].name"]


@pytest.mark.parametrize("path", ["mod:app", "pkg.mod:app", "pkg.mod.app", "pkg.mod:Cls.attr",
                                  "_private.x_1:build_app"])
def test_import_path_accepted(path: str) -> None:
    assert parse_config(app_doc(import_path=path)).applications[0].import_path == path


@pytest.mark.parametrize("path", ["mod", "mod:", ":app", "a:b:c", ".mod.app", "mod.app.",
                                  "my-mod:app", "mod app", "1mod:app", ""])
def test_import_path_refused(path: str) -> None:
    [(where, message)] = errors_of(app_doc(import_path=path))
    assert where == "applications[0].import_path"
    assert "module.sub:attribute" in message


def test_import_path_is_required() -> None:
    assert errors_of({"applications": [{"name": "x"}]}) == [
        ("applications[0].import_path", "required field is missing")]


def test_deployment_names_unique_within_an_app() -> None:
    [(path, message)] = errors_of(app_doc(deployments=[{"name": "A"}, {"name": "A"}]))
    assert path == "applications[0].deployments"
    assert "'A'" in message and "more than once" in message
    # The same name in two applications is fine.
    parse_config({"applications": [
        {"name": "a", "route_prefix": "/a", "import_path": "m:a", "deployments": [{"name": "A"}]},
        {"name": "b", "route_prefix": "/b", "import_path": "m:b", "deployments": [{"name": "A"}]},
    ]})


def test_application_names_and_route_prefixes_unique() -> None:
    apps: list[dict[str, Any]] = [{"name": "a", "import_path": "m:a", "route_prefix": "/x"},
                                  {"name": "a", "import_path": "m:b", "route_prefix": "/y"}]
    [(path, message)] = errors_of({"applications": apps})
    assert path == "applications" and "application name 'a'" in message
    apps[1]["name"], apps[1]["route_prefix"] = "b", "/x"
    [(path, message)] = errors_of({"applications": apps})
    assert path == "applications" and "route_prefix '/x'" in message
    apps[0]["route_prefix"] = apps[1]["route_prefix"] = None
    assert len(parse_config({"applications": apps}).applications) == 2


# ----------------------------------------------------------------- HTTP, gRPC, file


def test_http_and_grpc_defaults() -> None:
    http, grpc = HTTPOptionsSchema(), GrpcOptionsSchema()
    assert (http.host, http.port, http.root_path) == ("127.0.0.1", 8000, "")
    assert http.request_timeout_s is None and http.keep_alive_timeout_s == 5.0
    assert http.middlewares == [] and http.max_request_body_bytes == 100 * 1024 * 1024
    assert (grpc.port, grpc.grpc_servicer_functions) == (9000, [])
    config = ServeDeploySchema()
    assert config.proxy_location == "EveryNode" and config.applications == []
    assert config.logging_config is None


@pytest.mark.parametrize(("doc", "path"), [
    ({"http_options": {"port": 0}}, "http_options.port"),
    ({"http_options": {"port": 65536}}, "http_options.port"),
    ({"http_options": {"port": "8000"}}, "http_options.port"),
    ({"http_options": {"root_path": "api"}}, "http_options.root_path"),
    ({"http_options": {"request_timeout_s": 0}}, "http_options.request_timeout_s"),
    ({"http_options": {"keep_alive_timeout_s": -1}}, "http_options.keep_alive_timeout_s"),
    ({"http_options": {"middlewares": ["not a path"]}}, "http_options.middlewares[0]"),
    ({"http_options": {"max_request_body_bytes": 0}}, "http_options.max_request_body_bytes"),
    ({"http_options": {"hots": "x"}}, "http_options.hots"),
    ({"grpc_options": {"port": -5}}, "grpc_options.port"),
    ({"grpc_options": {"grpc_servicer_functions": ["x"]}},
     "grpc_options.grpc_servicer_functions[0]"),
    ({"proxy_location": "Everywhere"}, "proxy_location"),
    ({"logging_config": "debug"}, "logging_config"),
    ({"applications": {"name": "x"}}, "applications"),
])
def test_file_level_rules(doc: dict[str, Any], path: str) -> None:
    assert error_paths(doc) == [path]


def test_every_problem_is_listed_at_once() -> None:
    doc = {"http_options": {"port": 0}, "applications": [
        {"import_path": "m:a", "route_prefix": "x",
         "deployments": [{"name": "A", "num_replicas": -1}, {"name": "B", "bogus": 1}]}]}
    assert error_paths(doc) == [
        "http_options.port",
        "applications[0].route_prefix",
        "applications[0].deployments[0].num_replicas",
        "applications[0].deployments[1].bogus",
    ]
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert len(str(info.value).splitlines()) == 4


def test_top_level_application_field_in_multi_app_file_is_explained() -> None:
    [(path, message)] = errors_of({"import_path": "m:a", "applications": []})
    assert path == "import_path"
    assert "unknown field" in message and "applications" in message


def test_config_error_is_a_value_error_and_pickles() -> None:
    error = ConfigError([("a.b", "must be x (got 1)"), ("", "whole file")])
    assert issubclass(ConfigError, ValueError)
    assert str(error) == "a.b: must be x (got 1)\nwhole file"
    again = pickle.loads(pickle.dumps(error))
    assert again.errors == error.errors and str(again) == str(error)


# ----------------------------------------------------------------- parse_config sources


def test_parse_yaml_json_bytes_mapping_and_path(tmp_path: Path) -> None:
    from_yaml = parse_config(FULL)
    data = yaml.safe_load(FULL)
    assert parse_config(json.dumps(data)) == from_yaml
    assert parse_config(FULL.encode()) == from_yaml
    assert parse_config(data) == from_yaml
    file = tmp_path / "config.yaml"
    file.write_text(FULL)
    assert parse_config(file) == from_yaml
    assert from_yaml.http_options.request_timeout_s == 3.0
    assert from_yaml.applications[1].route_prefix is None


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        parse_config(tmp_path / "absent.yaml")


def test_yaml_syntax_error_has_line_and_column() -> None:
    [(path, message)] = errors_of("applications:\n- import_path: m:a\n  deployments: [\n")
    assert path == ""
    assert message.startswith("invalid YAML at line 4, column 1")


def test_duplicate_yaml_key_is_refused() -> None:
    [(_, message)] = errors_of("applications: []\napplications: []\n")
    assert "duplicate key 'applications'" in message and "line 2" in message


def test_yaml_merge_keys_still_work() -> None:
    text = ("applications:\n- &a {name: a, route_prefix: /a, import_path: m:a}\n"
            "- <<: *a\n  name: b\n  route_prefix: /b\n")
    assert [a.name for a in parse_config(text).applications] == ["a", "b"]


@pytest.mark.parametrize(("source", "message"), [
    ("", "the config is empty"),
    ("- a\n- b\n", "the config must be a mapping of fields, got a list"),
    ("config.yaml", "pass a pathlib.Path"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_wrong_top_level(source: Any, message: str) -> None:
    [(path, got)] = errors_of(source)
    assert path == "" and message in got


def test_yaml_dates_are_not_json() -> None:
    [(path, message)] = errors_of("applications:\n- import_path: m:a\n  args: {day: 2024-01-01}\n")
    assert path == "applications[0].args"
    assert "JSON-serializable" in message and "date" in message


# ----------------------------------------------------------------- the single-app form


def test_seed_single_app_form_becomes_the_default_application() -> None:
    config = parse_config(SEED_SINGLE_APP)
    [app] = config.applications
    assert (app.name, app.route_prefix, app.import_path) == ("default", "/",
                                                             "fruit:deployment_graph")
    mango, orange = app.deployments
    assert mango.model_fields_set == {"name", "num_replicas", "route_prefix"}
    assert orange.user_config == {"price": 2}
    assert config.model_fields_set == {"applications"}


def test_single_app_form_keeps_its_name_args_and_file_options() -> None:
    config = parse_config({"name": "shop", "route_prefix": "/shop", "import_path": "shop:app",
                           "args": {"n": 1}, "http_options": {"port": 8100},
                           "proxy_location": "HeadOnly"})
    [app] = config.applications
    assert (app.name, app.route_prefix, app.args) == ("shop", "/shop", {"n": 1})
    assert config.http_options.port == 8100 and config.proxy_location == "HeadOnly"


def test_single_app_form_rays_old_host_and_port() -> None:
    config = parse_config({"import_path": "m:a", "host": "0.0.0.0", "port": 8200})
    assert (config.http_options.host, config.http_options.port) == ("0.0.0.0", 8200)
    assert error_paths({"import_path": "m:a", "port": 0}) == ["port"]
    assert error_paths({"import_path": "m:a", "port": 1, "http_options": {}}) == ["port"]


def test_single_app_form_errors_name_fields_as_written() -> None:
    text = SEED_SINGLE_APP + "- name: Bad\n  num_replicas: -1\n  nmu: 1\n"
    assert error_paths(text) == ["deployments[2].num_replicas", "deployments[2].nmu"]
    assert error_paths({"import_path": "nodot"}) == ["import_path"]


# ----------------------------------------------------------------- dump and JSON


def test_dump_then_parse_round_trips() -> None:
    for config in (parse_config(FULL), parse_config(SEED_SINGLE_APP), ServeDeploySchema()):
        text = dump_config(config)
        again = parse_config(text)
        assert again == config
        for before, after in zip(config.applications, again.applications, strict=True):
            assert [d.model_fields_set for d in before.deployments] == \
                [d.model_fields_set for d in after.deployments]


def test_dump_exclude_defaults_round_trips_and_keeps_overrides() -> None:
    config = parse_config(FULL)
    text = dump_config(config, exclude_defaults=True)
    assert parse_config(text) == config
    # max_ongoing_requests: 5 is the default, but it overrides the decorator: it stays.
    assert "max_ongoing_requests: 5" in text
    assert "keep_alive_timeout_s" not in text
    assert dump_config(ServeDeploySchema(), exclude_defaults=True) == "{}\n"
    assert parse_config(dump_config(ServeDeploySchema(), exclude_defaults=True)) == \
        ServeDeploySchema()


def test_dump_style_is_serve_builds() -> None:
    text = dump_config(parse_config(FULL))
    assert "!!" not in text and "{" not in text.replace("{}", "")
    top = [line.split(":")[0] for line in text.splitlines() if line and not line[0].isspace()
           and not line.startswith("-")]
    assert top == ["proxy_location", "http_options", "grpc_options", "logging_config",
                   "applications"]
    assert "\n\nhttp_options:\n" in text and "\n\napplications:\n" in text
    assert list(yaml.safe_load(text)["applications"][0]) == [
        "name", "route_prefix", "import_path", "runtime_env", "args", "deployments",
        "external_scaler_enabled", "logging_config"]
    assert "  runtime_env: {}" in dump_config(parse_config(SEED_SINGLE_APP))


def test_dump_quotes_strings_that_look_like_other_types() -> None:
    config = parse_config(app_doc(args={"a": "yes", "b": "1.0", "c": "null", "d": "2024-01-01"}))
    assert parse_config(dump_config(config)).applications[0].args == \
        {"a": "yes", "b": "1.0", "c": "null", "d": "2024-01-01"}


def test_json_round_trip_keeps_what_was_set() -> None:
    config = parse_config({"applications": [{"import_path": "m:a",
                                             "deployments": [{"name": "A", "num_replicas": 2}]}]})
    text = config_to_json(config)
    assert json.loads(text) == {"applications": [
        {"import_path": "m:a", "deployments": [{"name": "A", "num_replicas": 2}]}]}
    again = config_from_json(text)
    assert again == config
    assert again.model_fields_set == {"applications"}
    assert config_from_json(text.encode()) == config
    full = config_from_json(json.dumps(parse_config(FULL).model_dump(mode="json")))
    assert full == parse_config(FULL)


def test_config_from_json_errors() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_json('{"applications": [\n  {"import_path": }]}')
    assert str(info.value).startswith("invalid JSON at line 2, column")
    with pytest.raises(ConfigError) as info:
        config_from_json('{"applications": [{"import_path": "m:a", "x": 1}]}')
    assert info.value.errors[0][0] == "applications[0].x"


# ----------------------------------------------------------------- deployment options


def test_default_options_are_the_schema_defaults_of_what_weir_acts_on() -> None:
    assert dict(DEFAULT_DEPLOYMENT_OPTIONS) == {
        "num_replicas": 1, "max_ongoing_requests": 5, "max_queued_requests": -1,
        "user_config": None, "health_check_period_s": 10.0, "health_check_timeout_s": 30.0,
        "graceful_shutdown_timeout_s": 20.0, "ray_actor_options": None,
        "max_replicas_per_node": None, "autoscaling_config": None, "logging_config": None}
    fields = DeploymentSchema.model_fields
    for name, value in DEFAULT_DEPLOYMENT_OPTIONS.items():
        assert fields[name].get_default() == value
    assert not set(DEFAULT_DEPLOYMENT_OPTIONS) & IGNORED_DEPLOYMENT_OPTIONS
    # Every other field is either ignored or not an option at all.
    assert set(fields) == {*DEFAULT_DEPLOYMENT_OPTIONS, *IGNORED_DEPLOYMENT_OPTIONS,
                           "name", "route_prefix"}
    with pytest.raises(TypeError):
        DEFAULT_DEPLOYMENT_OPTIONS["num_replicas"] = 3  # type: ignore[index]


def test_merge_is_defaults_then_decorator_then_config_entry() -> None:
    decorator = {"num_replicas": 2, "max_ongoing_requests": 2, "user_config": {"a": 1},
                 "ray_actor_options": {"num_cpus": 1}}
    override = DeploymentSchema(name="A", num_replicas=4, user_config=None)
    assert merge_deployment_options(decorator, override) == {
        **DEFAULT_DEPLOYMENT_OPTIONS, "num_replicas": 4, "max_ongoing_requests": 2,
        "user_config": None, "ray_actor_options": {"num_cpus": 1}}
    assert merge_deployment_options(decorator) == {**DEFAULT_DEPLOYMENT_OPTIONS, **decorator}
    assert merge_deployment_options({}, None) == DEFAULT_DEPLOYMENT_OPTIONS
    assert merge_deployment_options(decorator, DeploymentSchema(name="A")) == \
        merge_deployment_options(decorator)
    # A field set to its default still overrides the decorator.
    same = parse_config(app_doc(deployments=[{"name": "A", "max_ongoing_requests": 5}]))
    assert merge_deployment_options(decorator, same.applications[0].deployments[0])[
        "max_ongoing_requests"] == 5
    assert decorator["num_replicas"] == 2, "the inputs are not changed"


def test_merge_takes_the_config_entry_as_plain_data() -> None:
    # The goal in etcd keeps each entry as the JSON of the fields set: the same merge.
    config = parse_config(app_doc(deployments=[{"name": "A", "num_replicas": 3,
                                                "route_prefix": None}]))
    entry = json.loads(config_to_json(config))["applications"][0]["deployments"][0]
    assert entry == {"name": "A", "num_replicas": 3, "route_prefix": None}
    merged = merge_deployment_options({"num_replicas": 2}, entry)
    assert merged == {**DEFAULT_DEPLOYMENT_OPTIONS, "num_replicas": 3}
    assert merged == merge_deployment_options({"num_replicas": 2},
                                              config.applications[0].deployments[0])


def test_lightweight_and_ignored_options_do_not_restart_replicas() -> None:
    assert LIGHTWEIGHT_OPTIONS == {"num_replicas", "user_config", "autoscaling_config"}
    assert not any(restarts_replicas(o) for o in LIGHTWEIGHT_OPTIONS)
    assert not restarts_replicas("placement_group_strategy")
    assert restarts_replicas("ray_actor_options"), "new resources need a new replica"
    assert not restarts_replicas("graceful_shutdown_wait_loop_s")
    for option in ("max_ongoing_requests", "max_queued_requests", "health_check_period_s",
                   "health_check_timeout_s", "graceful_shutdown_timeout_s"):
        assert restarts_replicas(option), option


def test_user_config_json_is_canonical() -> None:
    assert user_config_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == \
        '{"a": [1, {"c": 3, "d": 2}], "b": 1}'
    assert user_config_json(None) == "null"
    assert user_config_json({"x": True}) != user_config_json({"x": 1})


def test_validate_deployment_options_returns_what_was_given() -> None:
    assert validate_deployment_options() == {}
    assert validate_deployment_options(num_replicas=2, max_queued_requests=2,
                                       health_check_period_s=3) == {
        "num_replicas": 2, "max_queued_requests": 2, "health_check_period_s": 3.0}
    assert validate_deployment_options(name="Model") == {"name": "Model"}
    assert validate_deployment_options(user_config={"t": (1, 2)}) == {"user_config": {"t": [1, 2]}}
    assert validate_deployment_options(route_prefix=None) == {}


def test_validate_deployment_options_names_the_option() -> None:
    with pytest.raises(ConfigError) as info:
        validate_deployment_options(max_ongoing_requests=0)
    assert str(info.value) == "max_ongoing_requests: must be greater than or equal to 1 (got 0)"
    with pytest.raises(ConfigError) as info:
        validate_deployment_options(num_replica=2, num_replicas=-1)
    assert info.value.errors[0][0] == "num_replica"
    assert info.value.errors[0][1].startswith("unknown option")
    assert info.value.errors[1] == ("num_replicas", "must be greater than or equal to 0 (got -1)")
    with pytest.raises(ConfigError, match="user_config: must be JSON-serializable"):
        validate_deployment_options(user_config={"f": print})
    with pytest.raises(ConfigError, match="route_prefix"):
        validate_deployment_options(route_prefix="/x")


# ----------------------------------------------------------------- diff


def two_apps(**mango: Any) -> ServeDeploySchema:
    doc = yaml.safe_load(FULL)
    doc["applications"][0]["deployments"][0].update(mango)
    return parse_config(doc)


def test_diff_first_deploy_adds_everything() -> None:
    diff = diff_applications(None, parse_config(FULL))
    assert diff == {"added": ["fruit", "internal"], "removed": [], "unchanged": [],
                    "changed": {}, "options": {}}


def test_diff_same_config_changes_nothing() -> None:
    diff = diff_applications(parse_config(FULL), parse_config(dump_config(parse_config(FULL))))
    assert diff["changed"] == {} and diff["options"] == {}
    assert diff["unchanged"] == ["fruit", "internal"]


@pytest.mark.parametrize("change", [
    {"num_replicas": 5},
    {"user_config": {"price": 4}},
    {"num_replicas": 1, "user_config": None},
])
def test_diff_num_replicas_and_user_config_are_lightweight(change: dict[str, Any]) -> None:
    diff = diff_applications(two_apps(), two_apps(**change))
    fruit = diff["changed"]["fruit"]
    assert fruit["update"] == "lightweight" and fruit["fields"] == {}
    mango = fruit["deployments"]["MangoStand"]
    assert mango["update"] == "lightweight"
    assert set(mango["fields"]) == set(change)
    assert diff["unchanged"] == ["internal"]


@pytest.mark.parametrize("change", [
    {"max_ongoing_requests": 6},
    {"health_check_period_s": 1},
    {"num_replicas": 3, "max_queued_requests": 10},
])
def test_diff_other_deployment_options_roll(change: dict[str, Any]) -> None:
    diff = diff_applications(two_apps(), two_apps(**change))
    fruit = diff["changed"]["fruit"]
    assert fruit["update"] == "roll"
    assert fruit["deployments"]["MangoStand"]["update"] == "roll"
    assert set(fruit["deployments"]["MangoStand"]["fields"]) == set(change)


def test_diff_options_weir_ignores_restart_nothing() -> None:
    diff = diff_applications(two_apps(), two_apps(placement_group_strategy="PACK",
                                                  graceful_shutdown_wait_loop_s=5))
    assert diff["changed"]["fruit"]["deployments"]["MangoStand"]["update"] == "lightweight"


def test_diff_field_values_and_unset_sides() -> None:
    diff = diff_applications(two_apps(), two_apps(num_replicas=5, graceful_shutdown_timeout_s=1))
    fields = diff["changed"]["fruit"]["deployments"]["MangoStand"]["fields"]
    assert fields["num_replicas"] == {"old": 2, "new": 5}
    assert fields["graceful_shutdown_timeout_s"] == {"new": 1.0}  # was not overridden


def test_diff_removing_an_override_reports_its_fields() -> None:
    old = two_apps()
    new_doc = yaml.safe_load(FULL)
    del new_doc["applications"][0]["deployments"][1]
    change = diff_applications(old, parse_config(new_doc))["changed"]["fruit"]
    pear = change["deployments"]["PearStand"]
    assert pear["update"] == "roll"
    assert pear["fields"]["max_queued_requests"] == {"old": 0}


@pytest.mark.parametrize(("field", "value"), [
    ("import_path", "fruit:other_graph"),
    ("args", {"color": "green"}),
    ("runtime_env", {"working_dir": "/srv/v2"}),
])
def test_diff_build_inputs_redeploy(field: str, value: Any) -> None:
    doc = yaml.safe_load(FULL)
    doc["applications"][0][field] = value
    change = diff_applications(parse_config(FULL), parse_config(doc))["changed"]["fruit"]
    assert change["update"] == "redeploy"
    assert list(change["fields"]) == [field]


def test_diff_route_prefix_is_lightweight_and_apps_added_removed() -> None:
    doc = yaml.safe_load(FULL)
    doc["applications"][0]["route_prefix"] = "/fruits"
    doc["applications"][1]["name"] = "internal2"
    doc["http_options"]["port"] = 8002
    diff = diff_applications(parse_config(FULL), parse_config(doc))
    assert diff["added"] == ["internal2"] and diff["removed"] == ["internal"]
    assert diff["changed"]["fruit"] == {
        "update": "lightweight", "deployments": {},
        "fields": {"route_prefix": {"old": "/fruit", "new": "/fruits"}}}
    assert diff["options"] == {"http_options.port": {"old": 8001, "new": 8002}}
    json.dumps(diff)


def test_diff_does_not_confuse_true_and_one() -> None:
    a = parse_config(app_doc(deployments=[{"name": "A", "user_config": {"x": True}}]))
    b = parse_config(app_doc(deployments=[{"name": "A", "user_config": {"x": 1}}]))
    assert diff_applications(a, b)["changed"]["default"]["update"] == "lightweight"


def test_schemas_reject_unknown_fields_everywhere() -> None:
    for model, extra in [(ServeDeploySchema, {}), (HTTPOptionsSchema, {}),
                         (GrpcOptionsSchema, {}), (RuntimeEnvSchema, {}),
                         (ServeApplicationSchema, {"import_path": "m:a"}),
                         (DeploymentSchema, {"name": "A"})]:
        assert model.model_config.get("extra") == "forbid"
        with pytest.raises(ValueError, match="Extra inputs"):
            model.model_validate({**extra, "surprise": 1})
