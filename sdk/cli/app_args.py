"""What `serve run` and `serve deploy` make of an import path and its flags, as Ray's CLI:
builder arguments given as `key=value` after the import path, and the runtime env from
`--runtime-env` (a YAML file), `--runtime-env-json` and `--working-dir`.

Pure functions over strings and dicts (the one file read is the YAML the user named);
errors are `ValueError`s that name the flag or argument and say what to give instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml


def builder_args(arguments: tuple[str, ...]) -> dict[str, str]:
    """`("k=v", ...)` as a dict of strings (Ray passes them to the builder unparsed)."""
    args: dict[str, str] = {}
    for argument in arguments:
        key, sep, value = argument.partition("=")
        if not sep or not key:
            raise ValueError(f"application argument {argument!r} is not key=value; give "
                             "builder arguments as key=value after the import path")
        if key in args:
            raise ValueError(f"application argument {key!r} is given twice; give it once")
        args[key] = value
    return args


def runtime_env(runtime_env_file: str | None, runtime_env_json: str | None,
                working_dir: str | None) -> dict[str, Any]:
    """The runtime env the flags describe ({} for none). `--runtime-env` and
    `--runtime-env-json` exclude each other; `--working-dir` overrides either's."""
    if runtime_env_file and runtime_env_json:
        raise ValueError("--runtime-env and --runtime-env-json both give the runtime env: "
                         "give one")
    env: Any = {}
    if runtime_env_file:
        try:
            env = yaml.safe_load(Path(runtime_env_file).read_text()) or {}
        except OSError as exc:
            raise ValueError(f"--runtime-env: cannot read {runtime_env_file}: "
                             f"{exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ValueError(f"--runtime-env: {runtime_env_file} is not YAML: {exc}") from exc
    elif runtime_env_json:
        try:
            env = json.loads(runtime_env_json)
        except ValueError as exc:
            raise ValueError(f"--runtime-env-json is not JSON: {exc}") from exc
    if not isinstance(env, dict):
        raise ValueError("the runtime env must be a mapping (like {\"env_vars\": {...}}); "
                         f"got {type(env).__name__}")
    if working_dir:
        local = os.path.isdir(working_dir)
        env = {**env, "working_dir": os.path.abspath(working_dir) if local else working_dir}
    return env


def import_path_config(import_path: str, arguments: tuple[str, ...], *, name: str,
                       route_prefix: str, app_dir: str, env: dict[str, Any]
                       ) -> dict[str, Any]:
    """The one-application config `serve run/deploy module:app k=v` deploy. With no working
    dir given, `app_dir` (an absolute path) is the code the replicas import."""
    app: dict[str, Any] = {
        "name": name, "route_prefix": route_prefix, "import_path": import_path,
        "runtime_env": {"working_dir": os.path.abspath(app_dir), **env}}
    args = builder_args(arguments)
    if args:
        app["args"] = args
    return {"applications": [app]}


def is_config_file(config_or_import_path: str) -> bool:
    """A config file (YAML or JSON) rather than a `module:app` import path."""
    return config_or_import_path.endswith((".yaml", ".yml", ".json"))
