"""The config's schema: one for the CLI, the SDK and the controller.

The format is Ray Serve's (`serve build` writes it, `serve deploy` reads it): pydantic
models of a multi-application file (`ServeDeploySchema`) and of what it holds, with every
field's rule and default. Reading and writing files is `weir.config.config_file`; the
errors a user sees are written by `weir.config.errors`; a deployment's options (defaults,
merging, what restarts replicas) are `weir.config.deployment_options`; the dry-run diff is
`weir.config.diff`.

Why two schemas serialize sparsely: a deployment entry in a config is an *override*. Only the
fields the user wrote replace what `@serve.deployment(...)` said; the rest keep the
decorator's values. Pydantic fills every default on validation, so "the user wrote it" lives
only in `model_fields_set`. A dump that wrote the defaults out and was read back (a file
written by `weir build`, the goal kept in etcd, `weir rollback`) would quietly turn every
default into an override that beats the decorator. So `DeploymentSchema` and
`RuntimeEnvSchema` dump only the fields that were set, compare equal only when they set the
same fields, and keep that distinction through YAML, JSON and etcd.

A rule raises ValueError saying what is wrong in the user's terms; `weir.config.errors`
adds the field path and the value.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from weir.config.autoscaling import NumReplicas, check_autoscaling_config
from weir.config.logging_config import check_logging_config
from weir.config.tls import shape_problem, tls_files

# ----------------------------------------------------------------- field rules


def _json_value(value: Any, where: str) -> Any:
    """`value` as plain JSON data (tuples become lists), or ValueError saying where not."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"must be JSON-serializable: {where or 'the value'} is {value}")
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"must be JSON-serializable: key {key!r} in "
                                 f"{where or 'the mapping'} is not a string")
        return {key: _json_value(item, f"{where}[{key!r}]") for key, item in value.items()}
    raise ValueError(f"must be JSON-serializable: {where or 'the value'} is a "
                     f"{type(value).__name__}")


def _json_dict(value: dict[str, Any]) -> dict[str, Any]:
    return _json_value(value, "")  # type: ignore[no-any-return]


def _name(value: str) -> str:
    if "/" in value:
        raise ValueError('must not contain "/"')
    return value


def _route_prefix(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith("/"):
        raise ValueError('must start with "/"')
    if len(value) > 1 and value.endswith("/"):
        raise ValueError('must not end with "/" unless it is exactly "/"')
    if "{" in value or "}" in value:
        raise ValueError('must not contain "{" or "}" (a prefix has no path parameters)')
    return value


_DOTTED = r"[^\W\d]\w*(?:\.[^\W\d]\w*)*"
_IMPORT_PATH = re.compile(rf"{_DOTTED}:{_DOTTED}|[^\W\d]\w*(?:\.[^\W\d]\w*)+")


def _import_path(value: str) -> str:
    if not _IMPORT_PATH.fullmatch(value):
        raise ValueError('must look like "module.sub:attribute" or "module.sub.attribute"')
    return value


def _middleware(value: Any, info: ValidationInfo) -> Any:
    """An entry of http_options.middlewares. With the context `resolve_imports` (a config
    received by the controller), an import path must also import: a path the cluster cannot
    load is refused at deploy time, before it can replace a working config."""
    from weir.config.middlewares import MiddlewareError, check_entry_shape, load_entry

    entry = check_entry_shape(value)
    if isinstance(entry, str):
        _import_path(entry)
        if info.context and info.context.get("resolve_imports"):
            try:
                load_entry(entry)
            except MiddlewareError as exc:
                raise ValueError(f"{exc} (it must be importable by the cluster's "
                                 "processes)") from None
    return entry


def _no_deployment_route(value: Any) -> Any:
    if value is not None:
        raise ValueError("a deployment has no route_prefix any more (as in Ray Serve 2.x): "
                         "set route_prefix on the application")
    return value


JsonDict = Annotated[dict[StrictStr, Any], AfterValidator(_json_dict)]

#: Ray's LoggingConfig, as a mapping of the fields given (`weir.config.logging_config`).
LoggingConfigField = Annotated[JsonDict | None, BeforeValidator(check_logging_config)]
Name = Annotated[StrictStr, Field(min_length=1), AfterValidator(_name)]
ImportPath = Annotated[StrictStr, AfterValidator(_import_path)]
Middleware = Annotated[Any, AfterValidator(_middleware)]
Seconds = Annotated[StrictFloat, Field(allow_inf_nan=False)]


# ----------------------------------------------------------------- the models


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _OverrideSchema(_Schema):
    """A schema whose dump, and equality, hold only the fields that were set."""

    @model_serializer(mode="wrap")
    def _dump_set_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _OverrideSchema)
        return self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]


class DeploymentSchema(_OverrideSchema):
    """Options of one deployment, as a config file overrides them (only set fields count).

    Every option of Ray Serve's deployment is accepted; those in
    `weir.config.deployment_options.IGNORED_DEPLOYMENT_OPTIONS` (placement groups, ...) are
    stored and checked but not acted on, and warn when used. The defaults written here are
    the only ones: `DEFAULT_DEPLOYMENT_OPTIONS` is read from them.
    """

    name: Name
    num_replicas: NumReplicas = 1
    max_ongoing_requests: StrictInt = Field(default=5, ge=1)
    #: -1: no bound.
    max_queued_requests: StrictInt = Field(default=-1, ge=-1)
    user_config: JsonDict | None = None
    health_check_period_s: Seconds = Field(default=10.0, gt=0)
    health_check_timeout_s: Seconds = Field(default=30.0, gt=0)
    graceful_shutdown_timeout_s: Seconds = Field(default=20.0, ge=0)
    graceful_shutdown_wait_loop_s: Seconds = Field(default=2.0, gt=0)
    ray_actor_options: JsonDict | None = None
    placement_group_bundles: list[JsonDict] | None = None
    placement_group_strategy: (
        Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] | None) = None
    max_replicas_per_node: StrictInt | None = Field(default=None, ge=1)
    autoscaling_config: Annotated[JsonDict | None,
                                  AfterValidator(check_autoscaling_config)] = None
    logging_config: LoggingConfigField = None
    request_router_config: JsonDict | None = None
    max_constructor_retry_count: StrictInt | None = Field(default=None, ge=0)
    #: Ray Serve 1.x kept a route per deployment; `serve config` output of that era shows
    #: `route_prefix: null`, so null is accepted and anything else is refused.
    route_prefix: Annotated[None, BeforeValidator(_no_deployment_route)] = None

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> DeploymentSchema:
        if ("num_replicas" in self.model_fields_set and self.num_replicas != "auto"
                and self.autoscaling_config is not None):
            raise ValueError("num_replicas cannot be set together with autoscaling_config "
                             '(as in Ray Serve): remove one of them, or set num_replicas: '
                             '"auto" to autoscale from its defaults')
        return self


class RuntimeEnvSchema(_OverrideSchema):
    """Where an application's code comes from and the environment it runs in.

    `pip` is accepted and stored; Weir does not install packages yet.
    """

    working_dir: StrictStr | None = None
    py_modules: list[StrictStr] | None = None
    env_vars: dict[StrictStr, StrictStr] | None = None
    pip: list[StrictStr] | None = None


class ServeApplicationSchema(_Schema):
    """One application: the import path of its graph and the overrides of its deployments.

    `route_prefix` None means no HTTP route (the app is reached through handles or gRPC).
    """

    name: Name = "default"
    route_prefix: Annotated[StrictStr | None, AfterValidator(_route_prefix)] = "/"
    import_path: ImportPath
    runtime_env: RuntimeEnvSchema = Field(default_factory=RuntimeEnvSchema)
    args: JsonDict = Field(default_factory=dict)
    deployments: list[DeploymentSchema] = Field(default_factory=list)
    external_scaler_enabled: StrictBool = False
    logging_config: LoggingConfigField = None
    #: Ray's per-application HTTP address, deprecated there: accepted and ignored.
    host: StrictStr = "0.0.0.0"
    port: StrictInt = Field(default=8000, ge=1, le=65535)
    #: Ray's application-level custom autoscaling policy: accepted and ignored.
    autoscaling_policy: JsonDict | None = None

    @field_validator("deployments")
    @classmethod
    def _unique_deployments(cls, value: list[DeploymentSchema]) -> list[DeploymentSchema]:
        _refuse_duplicates([d.name for d in value], "deployment name")
        return value


class HTTPOptionsSchema(_Schema):
    """The HTTP proxies' options.

    `host` defaults to 127.0.0.1 (Ray Serve's default too), so nothing is exposed beyond the
    machine unless asked; set "0.0.0.0" to serve other hosts.
    """

    host: StrictStr = Field(default="127.0.0.1", min_length=1)
    port: StrictInt = Field(default=8000, ge=1, le=65535)
    root_path: StrictStr = ""
    request_timeout_s: Seconds | None = Field(default=None, gt=0)
    keep_alive_timeout_s: Seconds = Field(default=5.0, gt=0)
    #: ASGI middlewares (`weir.config.middlewares`): import paths of middleware classes or of
    #: starlette `Middleware` objects, or objects pickled by `serve.start`; each wraps the
    #: ones before it (the last is outermost, as in Ray Serve).
    middlewares: list[Middleware] = Field(default_factory=list)
    max_request_body_bytes: StrictInt = Field(default=100 * 1024 * 1024, gt=0)
    #: HTTPS (`weir.config.tls`): PEM files where the proxies run; Ray's names.
    ssl_keyfile: StrictStr | None = None
    ssl_certfile: StrictStr | None = None
    ssl_keyfile_password: StrictStr | None = None
    ssl_ca_certs: StrictStr | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> HTTPOptionsSchema:
        problem = shape_problem(tls_files(self.model_dump()))
        if problem:
            raise ValueError(problem)
        return self

    @field_validator("root_path")
    @classmethod
    def _root_path(cls, value: str) -> str:
        if value and (not value.startswith("/") or value.endswith("/")):
            raise ValueError('must be empty or start with "/" and not end with "/"')
        return value


class GrpcOptionsSchema(_Schema):
    """The gRPC proxies' options (Ray Serve's gRPCOptionsSchema)."""

    port: StrictInt = Field(default=9000, ge=1, le=65535)
    #: Import paths of the functions adding the users' servicers to a grpc server.
    grpc_servicer_functions: list[ImportPath] = Field(default_factory=list)
    #: Ray's end-to-end timeout of gRPC calls: accepted and ignored.
    request_timeout_s: Seconds | None = Field(default=None, gt=0)


class ServeDeploySchema(_Schema):
    """A whole config file: cluster-wide options and every application."""

    proxy_location: Literal["Disabled", "HeadOnly", "EveryNode"] = "EveryNode"
    http_options: HTTPOptionsSchema = Field(default_factory=HTTPOptionsSchema)
    grpc_options: GrpcOptionsSchema = Field(default_factory=GrpcOptionsSchema)
    logging_config: LoggingConfigField = None
    applications: list[ServeApplicationSchema] = Field(default_factory=list)
    #: Ray's percentage of every deployment's target replicas: accepted and ignored.
    target_capacity: float | None = Field(default=None, ge=0, le=100)

    @field_validator("applications")
    @classmethod
    def _unique_applications(
        cls, value: list[ServeApplicationSchema]
    ) -> list[ServeApplicationSchema]:
        _refuse_duplicates([a.name for a in value], "application name")
        _refuse_duplicates([a.route_prefix for a in value if a.route_prefix is not None],
                           "route_prefix")
        return value


#: Fields `serve build` never writes (Ray-only ones Weir accepts and ignores, and the
#: HTTPS files, which belong to where the proxies run): a dump leaves them out unless the
#: config set them.
RAY_ONLY_FIELDS: dict[type[BaseModel], frozenset[str]] = {
    ServeDeploySchema: frozenset({"target_capacity"}),
    HTTPOptionsSchema: frozenset({"ssl_keyfile", "ssl_certfile", "ssl_keyfile_password",
                                  "ssl_ca_certs"}),
    GrpcOptionsSchema: frozenset({"request_timeout_s"}),
    ServeApplicationSchema: frozenset({"host", "port", "autoscaling_policy"}),
}


def _refuse_duplicates(values: list[Any], what: str) -> None:
    seen: dict[Any, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            raise ValueError(f"{what} {value!r} is used more than once "
                             f"(entries {seen[value]} and {i})")
        seen[value] = i
