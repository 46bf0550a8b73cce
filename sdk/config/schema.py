"""The config file: one schema for the CLI, the SDK and the controller.

The format is Ray Serve's (`serve build` writes it, `serve deploy` reads it): a
multi-application file (`ServeDeploySchema`), or the older single-application form whose top
level is one application (`import_path`, `runtime_env`, `deployments`, ...), which
`parse_config` turns into a multi-application file holding that one app.

Why two schemas serialize sparsely: a deployment entry in a config is an *override*. Only the
fields the user wrote replace what `@serve.deployment(...)` said; the rest keep the
decorator's values. Pydantic fills every default on validation, so "the user wrote it" lives
only in `model_fields_set`. A dump that wrote the defaults out and was read back (a file
written by `weir build`, the goal kept in etcd, `weir rollback`) would quietly turn every
default into an override that beats the decorator. So `DeploymentSchema` and
`RuntimeEnvSchema` dump only the fields that were set, compare equal only when they set the
same fields, and keep that distinction through YAML, JSON and etcd.

Every error names its field path (`applications[0].deployments[1].num_replicas`) and every
problem is reported at once, in one `ConfigError`.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, get_args

import yaml
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
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from weir.config.autoscaling import NumReplicas, check_autoscaling_config
from weir.config.ray_options import DEPLOYMENT, ignored_names

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

#: Application fields that are the inputs of building it: a change re-imports the code and
#: rolls every deployment of the app.
BUILD_FIELDS = frozenset({"import_path", "args", "runtime_env"})

#: Ray Serve's old names, so that an old config gets told the new one.
_RENAMED = {"max_concurrent_queries": "max_ongoing_requests"}


class ConfigError(ValueError):
    """A config (file, JSON or decorator options) is invalid.

    `errors` lists every problem as (field path, what is wrong); the message has one line per
    problem, "<field path>: <what is wrong> (got <value>)".
    """

    def __init__(self, errors: Sequence[tuple[str, str]] | str) -> None:
        if isinstance(errors, str):
            errors = [("", errors)]
        self.errors: list[tuple[str, str]] = list(errors)
        super().__init__("\n".join(f"{p}: {m}" if p else m for p, m in self.errors))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors,))


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

    Every option of Ray Serve's deployment is accepted; those in `IGNORED_DEPLOYMENT_OPTIONS`
    (ray_actor_options, placement groups, ...) are stored and checked
    but not acted on, and warn when used. The defaults written here are the only ones:
    `DEFAULT_DEPLOYMENT_OPTIONS` is read from them.
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
    logging_config: JsonDict | None = None
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
    logging_config: JsonDict | None = None

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


class ServeDeploySchema(_Schema):
    """A whole config file: cluster-wide options and every application."""

    proxy_location: Literal["Disabled", "HeadOnly", "EveryNode"] = "EveryNode"
    http_options: HTTPOptionsSchema = Field(default_factory=HTTPOptionsSchema)
    grpc_options: GrpcOptionsSchema = Field(default_factory=GrpcOptionsSchema)
    logging_config: JsonDict | None = None
    applications: list[ServeApplicationSchema] = Field(default_factory=list)

    @field_validator("applications")
    @classmethod
    def _unique_applications(
        cls, value: list[ServeApplicationSchema]
    ) -> list[ServeApplicationSchema]:
        _refuse_duplicates([a.name for a in value], "application name")
        _refuse_duplicates([a.route_prefix for a in value if a.route_prefix is not None],
                           "route_prefix")
        return value


def _refuse_duplicates(values: list[Any], what: str) -> None:
    seen: dict[Any, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            raise ValueError(f"{what} {value!r} is used more than once "
                             f"(entries {seen[value]} and {i})")
        seen[value] = i


# ----------------------------------------------------------------- errors


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        elif part.isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    model = root
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        nested = _nested_model(info.annotation) if info else None
        if nested is None:
            return None
        model = nested
    return model


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _unknown(name: str, known: Sequence[str], what: str = "field") -> str:
    if name in _RENAMED:
        return f"unknown {what} (Ray Serve renamed it {_RENAMED[name]})"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"unknown {what}" + (f" (did you mean {close[0]}?)" if close else "")


def _show(value: Any) -> str | None:
    """How an input is quoted after "got", or None when it is too big to help."""
    text = repr(value)
    if isinstance(value, (dict, list, tuple)) and len(text) > 60:
        return None
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(error: Mapping[str, Any], root: type[BaseModel]) -> str:
    loc = error["loc"]
    if error["type"] == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        message = _unknown(str(loc[-1]), list(parent.model_fields) if parent else [])
        if parent is ServeDeploySchema and loc[-1] in ServeApplicationSchema.model_fields:
            message += "; it belongs to one application, under `applications`"
        return message
    if error["type"] == "missing":
        return "required field is missing"
    message = re.sub(r"^(Value error|Assertion failed), ", "", str(error["msg"]))
    message = re.sub(r"^\w+ should ", "must ", message)
    message = re.sub(r" or instance of \w+", "", message)
    shown = _show(error.get("input"))
    return message if shown is None else f"{message} (got {shown})"


def _errors_from(exc: ValidationError, root: type[BaseModel]) -> list[tuple[str, str]]:
    return [(_path(e["loc"]), _describe(e, root)) for e in exc.errors(include_url=False)]


# ----------------------------------------------------------------- reading


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (YAML would keep the
    last one silently, e.g. a second `deployments:` hiding the first)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        try:
            first = seen.setdefault(key, key_node.start_mark.line + 1)
        except TypeError:
            continue  # an unhashable key: construct_mapping reports it
        if first != key_node.start_mark.line + 1:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {first})",
                key_node.start_mark)
    return loader.construct_mapping(node, deep=True)


_ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_ConfigLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"invalid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}") from None


#: Keys of the single-application form that belong to the file, not to the app.
_FILE_KEYS = ("proxy_location", "http_options", "grpc_options")


def _single_app_document(data: dict[Any, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Ray's single-application form as a multi-application document, and how to name its
    error paths as the user wrote them."""
    doc: dict[str, Any] = {k: data[k] for k in _FILE_KEYS if k in data}
    app = {k: v for k, v in data.items() if k not in (*_FILE_KEYS, "host", "port")}
    renames = {"applications[0]": ""}
    # Ray's single-app schema kept the proxy's host and port at the top level.
    legacy = {k: data[k] for k in ("host", "port") if k in data}
    if legacy and "http_options" not in data:
        doc["http_options"] = legacy
        renames.update({f"http_options.{k}": k for k in legacy})
    elif legacy:
        raise ConfigError([(k, "give it in http_options only") for k in legacy])
    doc["applications"] = [app]
    return doc, renames


def _rename(path: str, renames: Mapping[str, str]) -> str:
    for old, new in renames.items():
        if path == old or path.startswith((old + ".", old + "[")):
            rest = path[len(old):]
            return (new + rest) if new else rest.lstrip(".")
    return path


def _validate_document(data: Any, *, resolve_imports: bool = False) -> ServeDeploySchema:
    if data is None:
        raise ConfigError("the config is empty")
    if isinstance(data, ServeDeploySchema):
        return data
    if not isinstance(data, Mapping):
        hint = (" (to read a file, pass a pathlib.Path)"
                if isinstance(data, str) and data.endswith((".yaml", ".yml", ".json")) else "")
        raise ConfigError(f"the config must be a mapping of fields, got a "
                          f"{type(data).__name__}{hint}")
    data = dict(data)
    renames: dict[str, str] = {}
    if "applications" not in data and "import_path" in data:
        data, renames = _single_app_document(data)
    try:
        return ServeDeploySchema.model_validate(
            data, context={"resolve_imports": resolve_imports})
    except ValidationError as exc:
        errors = _errors_from(exc, ServeDeploySchema)
        raise ConfigError([(_rename(p, renames), m) for p, m in errors]) from None


def parse_config(source: str | bytes | Mapping[str, Any] | Path) -> ServeDeploySchema:
    """Read and validate a config: YAML or JSON text, a mapping, or the path of a file.

    The single-application form (top-level `import_path`, `runtime_env`, `deployments`,
    maybe `name`, `route_prefix`, `args`, and Ray's old `host`/`port`) becomes a file with
    that one application, named "default" unless it says otherwise. Raises ConfigError
    listing every problem; OSError if a file cannot be read.
    """
    if isinstance(source, Path):
        source = source.read_bytes()
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"the config is not UTF-8 text (byte {exc.start})") from None
    if isinstance(source, str):
        return _validate_document(_load_yaml(source))
    return _validate_document(source)


def config_from_json(text: str | bytes) -> ServeDeploySchema:
    """Read a config sent over the wire (as `config_to_json` writes it); ConfigError if bad.

    This is how the controller reads configs, so it also checks what only the cluster can:
    that http_options.middlewares import (a client's `parse_config` may not see the
    cluster's modules)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: "
                          f"{exc.msg}") from None
    return _validate_document(data, resolve_imports=True)


# ----------------------------------------------------------------- writing


def config_to_json(schema: ServeDeploySchema) -> str:
    """The config as JSON for the wire, holding only what was set (a partial deploy must not
    reset the options it did not mention)."""
    return schema.model_dump_json(exclude_unset=True)


def dump_config(schema: ServeDeploySchema, *, exclude_defaults: bool = False) -> str:
    """The config as YAML in the style of `serve build`: block style, fields in the schema's
    order, a blank line between top-level sections. `parse_config` reads it back equal.

    With `exclude_defaults`, fields equal to their defaults are left out, except in
    deployment entries: there a field the user set overrides the decorator even when it
    equals the default, so it stays.
    """
    data = schema.model_dump(mode="json", exclude_defaults=exclude_defaults)
    if exclude_defaults:
        for app, app_data in zip(schema.applications, data.get("applications", []),
                                 strict=True):
            if app.deployments:
                app_data["deployments"] = [d.model_dump(mode="json") for d in app.deployments]
    if not data:
        return "{}\n"
    return "\n".join(
        yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False,
                       allow_unicode=True)
        for key, value in data.items()
    )


# ----------------------------------------------------------------- deployment options

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
    errors = [(k, _unknown(k, list(fields), "option")) for k in options if k not in fields]
    known = {k: v for k, v in options.items() if k in fields}
    try:
        checked = DeploymentSchema.model_validate({"name": "deployment", **known})
    except ValidationError as exc:
        errors += _errors_from(exc, DeploymentSchema)
    if errors:
        raise ConfigError(errors)
    return {k: getattr(checked, k) for k in known if k != "route_prefix"}


def merge_deployment_options(
    decorator_options: Mapping[str, Any],
    override: DeploymentSchema | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every option of one deployment: `DEFAULT_DEPLOYMENT_OPTIONS`, then the decorator's
    options (only those the user set), then the fields a config entry set (`override`: a
    `DeploymentSchema`, or its entry as plain data, as the goal keeps it). Pure.

    An option Weir ignores is kept only where a side set it. The entry's `name` and its
    Ray 1.x `route_prefix` are not options and are left out.
    """
    if isinstance(override, DeploymentSchema):
        override = override.model_dump(exclude_unset=True)
    entry = {k: v for k, v in (override or {}).items() if k not in ("name", "route_prefix")}
    return {**DEFAULT_DEPLOYMENT_OPTIONS, **decorator_options, **entry}


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


# ----------------------------------------------------------------- diff


def _same(a: Any, b: Any) -> bool:
    # JSON text, not ==: True == 1 and 1 == 1.0 in Python, not in a config.
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """{field: {"old": ..., "new": ...}} for each differing field; a side that did not
    set the field has no key."""
    out: dict[str, Any] = {}
    for key in [*new, *(k for k in old if k not in new)]:
        if key in old and key in new and _same(old[key], new[key]):
            continue
        out[key] = {**({"old": old[key]} if key in old else {}),
                    **({"new": new[key]} if key in new else {})}
    return out


def _diff_app(old: ServeApplicationSchema, new: ServeApplicationSchema) -> dict[str, Any] | None:
    fields = _changed_fields(old.model_dump(mode="json", exclude={"deployments"}),
                             new.model_dump(mode="json", exclude={"deployments"}))
    before = {d.name: d.model_dump(mode="json", exclude={"name"}) for d in old.deployments}
    after = {d.name: d.model_dump(mode="json", exclude={"name"}) for d in new.deployments}
    deployments: dict[str, Any] = {}
    for name in [*after, *(n for n in before if n not in after)]:
        changed = _changed_fields(before.get(name, {}), after.get(name, {}))
        if changed:
            light = not any(restarts_replicas(k) for k in changed)
            deployments[name] = {"update": "lightweight" if light else "roll",
                                 "fields": changed}
    if not fields and not deployments:
        return None
    if BUILD_FIELDS & set(fields):
        update = "redeploy"
    elif any(d["update"] == "roll" for d in deployments.values()):
        update = "roll"
    else:
        update = "lightweight"
    return {"update": update, "fields": fields, "deployments": deployments}


def diff_applications(old: ServeDeploySchema | None, new: ServeDeploySchema) -> dict[str, Any]:
    """What deploying `new` over `old` changes, as JSON-ready data (`weir deploy --dry-run`).

    Keys: "added", "removed", "unchanged" (application names); "changed": per app, its
    "update" — "lightweight" (no replica restarts: only num_replicas, user_config or
    autoscaling_config of deployments, or route_prefix and other app settings), "roll"
    (some deployment's other options changed: its replicas are replaced one by one) or
    "redeploy" (import_path, args or runtime_env changed: the code is imported again and
    every deployment rolls) — the app "fields" that changed, and per changed deployment
    override its "update" and "fields"; "options": changed cluster-wide fields
    ("http_options.port", ...). Each changed field is {"old": ..., "new": ...}, a side
    missing when the config did not set it (a deployment then keeps its decorator's value).
    """
    old_apps = {a.name: a for a in old.applications} if old else {}
    new_apps = {a.name: a for a in new.applications}
    changed: dict[str, Any] = {}
    unchanged: list[str] = []
    for name, app in new_apps.items():
        if name in old_apps:
            change = _diff_app(old_apps[name], app)
            if change is None:
                unchanged.append(name)
            else:
                changed[name] = change
    options: dict[str, Any] = {}
    if old is not None:
        before = old.model_dump(mode="json", exclude={"applications"})
        after = new.model_dump(mode="json", exclude={"applications"})
        for key in after:
            if isinstance(after[key], dict) and key.endswith("_options"):
                for sub, change in _changed_fields(before[key], after[key]).items():
                    options[f"{key}.{sub}"] = change
            elif not _same(before[key], after[key]):
                options[key] = {"old": before[key], "new": after[key]}
    return {
        "added": [n for n in new_apps if n not in old_apps],
        "removed": [n for n in old_apps if n not in new_apps],
        "unchanged": unchanged,
        "changed": changed,
        "options": options,
    }
