"""The config file: reading YAML, JSON or a mapping into the schema, and writing it back.

The format is Ray Serve's (`serve build` writes it, `serve deploy` reads it): a
multi-application file (`ServeDeploySchema`), or the older single-application form whose top
level is one application (`import_path`, `runtime_env`, `deployments`, ...), which
`parse_config` turns into a multi-application file holding that one app; its errors still
name the fields as the user wrote them.

Reading refuses a YAML key written twice (YAML keeps the last silently). Writing keeps what
the schema keeps: a deployment entry holds only the fields the user set (see
`weir.config.schema`), so a file written by `dump_config` or `config_to_json` and read back
overrides exactly what the original did.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from weir.config.errors import ConfigError, validation_errors
from weir.config.schema import RAY_ONLY_FIELDS, ServeDeploySchema

__all__ = ["config_from_json", "config_to_json", "dump_config", "parse_config"]


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
        errors = validation_errors(exc, ServeDeploySchema)
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
    except UnicodeDecodeError as exc:  # bytes that are no Unicode text (found by fuzzing)
        raise ConfigError(f"the config is not UTF-8 text (byte {exc.start})") from None
    return _validate_document(data, resolve_imports=True)


def config_to_json(schema: ServeDeploySchema) -> str:
    """The config as JSON for the wire, holding only what was set (a partial deploy must not
    reset the options it did not mention)."""
    return schema.model_dump_json(exclude_unset=True)


def _drop_unset_ray_only(model: BaseModel, data: dict[str, Any]) -> None:
    for name in RAY_ONLY_FIELDS.get(type(model), ()):
        if name not in model.model_fields_set:
            data.pop(name, None)


def dump_config(schema: ServeDeploySchema, *, exclude_defaults: bool = False) -> str:
    """The config as YAML in the style of `serve build`: block style, fields in the schema's
    order, a blank line between top-level sections. `parse_config` reads it back equal.

    With `exclude_defaults`, fields equal to their defaults are left out, except in
    deployment entries: there a field the user set overrides the decorator even when it
    equals the default, so it stays.
    """
    data = schema.model_dump(mode="json", exclude_defaults=exclude_defaults)
    _drop_unset_ray_only(schema, data)
    for key, model in (("http_options", schema.http_options),
                       ("grpc_options", schema.grpc_options)):
        if key in data:
            _drop_unset_ray_only(model, data[key])
    for app, app_data in zip(schema.applications, data.get("applications", []), strict=True):
        _drop_unset_ray_only(app, app_data)
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
