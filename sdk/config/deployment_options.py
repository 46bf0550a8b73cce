"""A deployment's options: their defaults, how the layers that set them merge, and which
changes restart replicas.

An option can be set in three places: the schema's default, `@serve.deployment(...)` (or
`.options(...)`), and a config file's deployment entry. `merge_deployment_options` is the
one place they are layered, for the decorator, `weir build`, the controller and the
replicas alike. A config entry counts only for the fields the user wrote (see
`weir.config.schema`), so it overrides the decorator only where it says so.

Some changes keep the running replicas (Ray Serve's lightweight update); the others replace
them. `restarts_replicas` is the one rule, read by `weir.build.definition_version` (what is
in a deployment's version) and by `weir.config.diff` (what `weir deploy --dry-run` says).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from weir.config.errors import ConfigError, unknown_name, validation_errors
from weir.config.ray_options import DEPLOYMENT, ignored_names
from weir.config.schema import DeploymentSchema

__all__ = [
    "DEFAULT_DEPLOYMENT_OPTIONS",
    "IGNORED_DEPLOYMENT_OPTIONS",
    "LIGHTWEIGHT_OPTIONS",
    "merge_deployment_options",
    "restarts_replicas",
    "user_config_json",
    "validate_deployment_options",
]

#: Deployment options whose change keeps the running replicas (Ray Serve's lightweight
#: update): `restarts_replicas` says no for them, so `weir.build.definition_version` leaves
#: them out of a deployment's version and `diff_applications` calls such a change
#: lightweight. Ray's list also has max_ongoing_requests, graceful_shutdown_timeout_s,
#: graceful_shutdown_wait_loop_s, health_check_period_s and health_check_timeout_s; Weir
#: replaces the replicas for those until a replica can take them in a RECONFIGURE.
LIGHTWEIGHT_OPTIONS = frozenset({"num_replicas", "user_config", "autoscaling_config"})

#: Deployment options Weir accepts from Ray Serve without acting on them (they warn when
#: used; `weir.config.ray_options` says why for each).
IGNORED_DEPLOYMENT_OPTIONS = ignored_names(DEPLOYMENT)

#: Every deployment option Weir acts on, with its default: read from `DeploymentSchema`'s
#: field defaults, so the decorator, `weir build`, the controller and the replicas share one
#: source. Options Weir ignores have no default here: they are present only where set.
DEFAULT_DEPLOYMENT_OPTIONS: Mapping[str, Any] = MappingProxyType({
    name: field.get_default(call_default_factory=True)
    for name, field in DeploymentSchema.model_fields.items()
    if name not in ("name", "route_prefix") and name not in IGNORED_DEPLOYMENT_OPTIONS
})


def validate_deployment_options(**options: Any) -> dict[str, Any]:
    """Check the options of `@serve.deployment(...)` or `.options(...)` by the rules of
    `DeploymentSchema` (`name` optional here) and return them validated (ints given for
    seconds become floats). ConfigError names each bad option, e.g.
    "max_ongoing_requests: must be greater than or equal to 1 (got 0)".
    """
    fields = DeploymentSchema.model_fields
    errors = [(k, unknown_name(k, list(fields), "option")) for k in options if k not in fields]
    known = {k: v for k, v in options.items() if k in fields}
    try:
        checked = DeploymentSchema.model_validate({"name": "deployment", **known})
    except ValidationError as exc:
        errors += validation_errors(exc, DeploymentSchema)
    if errors:
        raise ConfigError(errors)
    return {k: getattr(checked, k) for k in known if k != "route_prefix"}


def merge_deployment_options(
    decorator_options: Mapping[str, Any],
    override: DeploymentSchema | Mapping[str, Any] | None = None,
    app_logging_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every option of one deployment: `DEFAULT_DEPLOYMENT_OPTIONS`, then the decorator's
    options (only those the user set), then the fields a config entry set (`override`: a
    `DeploymentSchema`, or its entry as plain data, as the goal keeps it). Pure.

    An option Weir ignores is kept only where a side set it. The entry's `name` and its
    Ray 1.x `route_prefix` are not options and are left out. `app_logging_config` (the
    application's `logging_config`) applies where neither side set one, as in Ray.
    """
    if isinstance(override, DeploymentSchema):
        override = override.model_dump(exclude_unset=True)
    entry = {k: v for k, v in (override or {}).items() if k not in ("name", "route_prefix")}
    merged = {**DEFAULT_DEPLOYMENT_OPTIONS, **decorator_options, **entry}
    if merged.get("logging_config") is None and app_logging_config:
        merged["logging_config"] = dict(app_logging_config)
    return merged


def restarts_replicas(option: str) -> bool:
    """Whether changing this deployment option replaces the running replicas: yes for all
    but `LIGHTWEIGHT_OPTIONS` and the options Weir ignores (a change with no effect must not
    restart anything)."""
    return (option not in LIGHTWEIGHT_OPTIONS and option not in IGNORED_DEPLOYMENT_OPTIONS
            and option not in ("name", "route_prefix"))


def user_config_json(value: Any) -> str:
    """The canonical JSON of a user_config.

    The controller compares the goal's form with the one each replica reports it applied,
    and sends RECONFIGURE while they differ: both sides must call this one function, or a
    replica would be reconfigured forever.
    """
    return json.dumps(value, sort_keys=True)
