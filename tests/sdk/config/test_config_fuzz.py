"""Fuzzing the config parser (hypothesis): whatever a config file or a deploy request holds,
parsing it either gives a config or raises ConfigError with a message naming what is wrong;
never another exception. Documents are drawn near the schema (its own field names, wrong
types, unknown names, deep nesting) so that the validators are reached, not only the
top-level "must be a mapping"."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from weir.config.config_file import config_from_json, parse_config
from weir.config.errors import ConfigError
from weir.config.schema import (
    DeploymentSchema,
    HTTPOptionsSchema,
    ServeApplicationSchema,
    ServeDeploySchema,
)

FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.sampled_from(["/", "/a", "a:b", "tests.e2e.apps.basic:Echo", "0.0.0.0",
                                     "auto", "RUNNING", "-1", "1e309"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=4)


def near(model: Any, extra: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Any]:
    """Mappings using `model`'s field names (and a few unknown ones) with any values."""
    names = st.sampled_from([*model.model_fields, "unknown_field", "num_replica"])
    return st.dictionaries(names, extra if extra is not None else json_values, max_size=4)


deployments = near(DeploymentSchema)
applications = st.builds(
    lambda base, deps: {**base, **({"deployments": deps} if deps is not None else {})},
    near(ServeApplicationSchema), st.none() | st.lists(deployments, max_size=2))
documents = st.builds(
    lambda base, apps, http: {**base, "applications": apps,
                              **({"http_options": http} if http is not None else {})},
    near(ServeDeploySchema), st.lists(applications, max_size=2),
    st.none() | near(HTTPOptionsSchema))


def parses_or_names_the_problem(parse: Any, source: Any) -> None:
    try:
        config = parse(source)
    except ConfigError as exc:
        assert str(exc).strip(), f"an empty ConfigError for {source!r}"
        return
    assert isinstance(config, ServeDeploySchema)


@FUZZ
@given(documents)
def test_documents_near_the_schema(doc: dict[str, Any]) -> None:
    parses_or_names_the_problem(parse_config, doc)
    parses_or_names_the_problem(config_from_json, json.dumps(doc))


@FUZZ
@given(json_values)
def test_any_json_value(value: Any) -> None:
    parses_or_names_the_problem(config_from_json, json.dumps(value))


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=200))
@example(b"\x80")  # found by fuzzing: not UTF-8
def test_any_text_as_yaml_or_json(text: str | bytes) -> None:
    parses_or_names_the_problem(parse_config, text)
    parses_or_names_the_problem(config_from_json, text)
