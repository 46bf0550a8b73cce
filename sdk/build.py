"""Turn an application graph into the specs a controller runs.

A spec is plain data: the app and deployment names, the options the user set, and the
deployment's definition (class or function plus constructor arguments) pickled with
cloudpickle, every nested Application replaced by a DeploymentHandle to it. Classes from an
importable module pickle by reference (the replica imports the module); classes defined in
`__main__` or a notebook pickle by value.

`python -m weir.build --import-path mod:app` is how a controller builds an application from
a config file: in a child process, so that user imports can neither block nor crash it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import json
import os
import sys
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import cloudpickle

from weir.config.deployment_options import restarts_replicas
from weir.deployment import Application, Deployment
from weir.handle import DeploymentHandle
from weir.import_path import import_attr
from weir.warm_process import WARM_FLAG, enter, wait_for_assignment


@dataclass(frozen=True)
class DeploymentSpec:
    """What a replica needs to run one deployment of one application."""

    app: str
    name: str
    #: The user's decorator options (only those set; defaults and config overrides merge later).
    options: dict[str, Any]
    #: cloudpickle of (func_or_class, args, kwargs).
    definition: bytes
    ingress: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the definition in base64)."""
        data = asdict(self)
        data["definition"] = base64.b64encode(self.definition).decode()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeploymentSpec:
        """Inverse of `to_json`."""
        return cls(**{**data, "definition": base64.b64decode(data["definition"])})


@dataclass(frozen=True)
class BuiltApp:
    """An application's deployments, ingress first."""

    name: str
    deployments: list[DeploymentSpec] = field(default_factory=list)

    @property
    def ingress(self) -> str:
        """Name of the ingress deployment."""
        return self.deployments[0].name

    def to_json(self) -> str:
        """Serialize for the wire and for etcd."""
        return json.dumps({"name": self.name,
                           "deployments": [d.to_json() for d in self.deployments]})

    @classmethod
    def from_json(cls, text: str | bytes) -> BuiltApp:
        """Inverse of `to_json`."""
        data = json.loads(text)
        return cls(data["name"], [DeploymentSpec.from_json(d) for d in data["deployments"]])


def definition_version(spec: DeploymentSpec, options: dict[str, Any], extra: str = "") -> str:
    """The code version of a deployment: changes whenever a replica must be restarted.

    Only options that `restarts_replicas` names count: changing a lightweight one
    (num_replicas, user_config, ...; Ray Serve's rule) or one Weir ignores keeps the running
    replicas.
    """
    heavy = {k: v for k, v in sorted(options.items()) if restarts_replicas(k)}
    if heavy.get("logging_config") is None:
        # Unset, it stays out: Weir learning the option must not change the version (and
        # restart the replicas) of every deployment that was running before.
        heavy.pop("logging_config", None)
    digest = hashlib.sha256(spec.definition)
    digest.update(json.dumps(heavy, sort_keys=True, default=str).encode())
    digest.update(extra.encode())
    return digest.hexdigest()[:16]


def _walk(value: Any) -> Iterator[Application]:
    if isinstance(value, Application):
        yield value
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _walk(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)


def _substitute(value: Any, handles: dict[int, DeploymentHandle]) -> Any:
    if isinstance(value, Application):
        return handles[id(value)]
    if isinstance(value, list):
        return [_substitute(v, handles) for v in value]
    if isinstance(value, tuple):
        return tuple(_substitute(v, handles) for v in value)
    if isinstance(value, (set, frozenset)):
        return type(value)(_substitute(v, handles) for v in value)
    if isinstance(value, dict):
        return {k: _substitute(v, handles) for k, v in value.items()}
    return value


def with_app_logging_config(app: BuiltApp, logging_config: dict[str, Any] | None) -> BuiltApp:
    """`app` with an application-wide logging_config given to each deployment that sets
    none of its own (Ray's rule: the deployment's wins). Pure."""
    if not logging_config:
        return app
    return BuiltApp(app.name, [
        d if d.options.get("logging_config") is not None
        else replace(d, options={**d.options, "logging_config": dict(logging_config)})
        for d in app.deployments])


def build_app(root: Application, app_name: str) -> BuiltApp:
    """Build the graph under `root` into specs; nested Applications become handles.

    Distinct nodes that share a deployment name get suffixes (`Model`, `Model_1`), as in Ray.
    """
    if not isinstance(root, Application):
        raise TypeError(
            f"expected an Application (a bound deployment, e.g. `MyDeployment.bind()`), "
            f"got {type(root).__name__}"
        )
    order: list[Application] = []
    seen: set[int] = set()

    def visit(node: Application) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        order.append(node)
        for child in _walk((node.args, node.kwargs)):
            visit(child)

    visit(root)
    names: dict[int, str] = {}
    used: dict[str, int] = {}
    for node in order:
        base = node.deployment.name
        count = used.get(base, 0)
        used[base] = count + 1
        names[id(node)] = base if count == 0 else f"{base}_{count}"
    handles = {key: DeploymentHandle(name, app_name) for key, name in names.items()}
    specs = []
    for node in order:
        args = _substitute(node.args, handles)
        kwargs = _substitute(node.kwargs, handles)
        try:
            definition = cloudpickle.dumps((node.deployment.func_or_class, args, kwargs))
        except Exception as exc:
            raise TypeError(
                f"deployment {names[id(node)]!r}: its class or constructor arguments cannot "
                f"be serialized: {exc}"
            ) from exc
        specs.append(
            DeploymentSpec(
                app=app_name,
                name=names[id(node)],
                options=dict(node.deployment.options_set),
                definition=definition,
                ingress=node is root,
            )
        )
    return BuiltApp(app_name, specs)


def load_application(import_path: str, args: dict[str, Any] | None = None) -> Application:
    """Resolve an import path to an Application: a bound app, a Deployment (bound with no
    arguments), or an application builder function called with `args`."""
    target = import_attr(import_path)
    if isinstance(target, Application):
        if args:
            raise ValueError(f"{import_path!r} is an already-bound application; it takes no args")
        return target
    if isinstance(target, Deployment):
        return target.bind()
    if callable(target):
        built = target(args or {})
        if isinstance(built, Application):
            return built
        raise TypeError(f"application builder {import_path!r} returned {type(built).__name__}, "
                        "not an Application")
    raise TypeError(f"{import_path!r} is a {type(target).__name__}, not an Application")


def main(argv: list[str] | None = None) -> int:
    """Child-process entry: build `--import-path` and print the BuiltApp as JSON on stdout."""
    parser = argparse.ArgumentParser(prog="python -m weir.build")
    parser.add_argument("--import-path", required=True)
    parser.add_argument("--app-name", required=True)
    parser.add_argument("--args-json", default="{}")
    opts = parser.parse_args(argv)
    try:
        app = load_application(opts.import_path, json.loads(opts.args_json))
        built = build_app(app, opts.app_name)
    except BaseException as exc:
        summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        sys.stdout.write(json.dumps({"error": summary, "traceback": traceback.format_exc()}))
        return 1
    sys.stdout.write(built.to_json())
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == [WARM_FLAG]:
        # Started ahead by a controller (weir.warm_process): Weir's imports are done (the
        # public API too, which every app imports; by name, since this runs as __main__ and
        # weir.serve imports weir.build again); the build's arguments, working directory and
        # environment come on stdin.
        importlib.import_module("weir.serve")
        assignment = wait_for_assignment(sys.stdin.buffer)
        if assignment is None:
            sys.exit(0)
        enter(assignment)
        sys.argv[1:] = assignment.argv
    sys.path.insert(0, ".")
    code = main()
    # The parent reads stdout to its end, which comes when this process exits; finalizing
    # an interpreter that imported grpc and the app takes 60-100 ms more, and a build child
    # has nothing to finalize (it only describes the app): out at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
