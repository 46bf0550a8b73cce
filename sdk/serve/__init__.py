"""`from weir import serve`: Ray Serve's API on a Weir cluster.

`serve.run(app)` deploys an application and returns a handle to its ingress. With no
cluster configured (WEIR_ADDRESS, or a `weir start` cluster) it starts an embedded local
cluster for the life of the process. Calls carry the cluster token of WEIR_TOKEN, else of
the `weir start` cluster (weir.auth); an embedded cluster requires WEIR_TOKEN if it is set.
Apps defined in `__main__` or a notebook are shipped by value (cloudpickle); classes from
importable modules by reference.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from typing import Any, NoReturn

import structlog
from pydantic import BaseModel

# Not `context`: `weir.serve.context` is Ray's module path for the replica and request
# context (`serve.context`), which would replace this name once imported.
from weir import context as cluster_context
from weir.batching import batch
from weir.build import BuiltApp, build_app, with_app_logging_config
from weir.cli.admin_client import AdminClient, CodeNotShipped
from weir.cli.deploy_wait import DeployMark, changed_count, mark_before, wait_for_deploy
from weir.config import ray_options
from weir.config.logging_config import check_logging_config
from weir.config.middlewares import pickled_entry
from weir.config.ray_options import refuse_unknown
from weir.config.schema import GrpcOptionsSchema, HTTPOptionsSchema
from weir.deployment import Application, Deployment, deployment
from weir.exceptions import (
    BackPressureError,
    ClusterError,
    RayServeException,
    RequestTimeoutError,
)
from weir.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator
from weir.ingress import ingress
from weir.local_testing import LocalPlane
from weir.multiplex import get_multiplexed_model_id, multiplexed
from weir.packages.archive import PackageTooLarge
from weir.runtime_context import get_replica_context, replica_context_or_none
from weir.serve.schema import (
    ApplicationStatusOverview,
    DeploymentStatusOverview,
    ServeStatus,
)

__all__ = [
    "Application",
    "ApplicationStatusOverview",
    "BackPressureError",
    "Deployment",
    "DeploymentHandle",
    "DeploymentResponse",
    "DeploymentResponseGenerator",
    "DeploymentStatusOverview",
    "RayServeException",
    "RequestTimeoutError",
    "ServeStatus",
    "batch",
    "delete",
    "deployment",
    "get_app_handle",
    "get_deployment_handle",
    "get_multiplexed_model_id",
    "get_replica_context",
    "ingress",
    "multiplexed",
    "run",
    "shutdown",
    "start",
    "status",
]

DEPLOY_WAIT_S = 120.0


class _Session:
    """The cluster this process deploys to (and owns, if it started it)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.client: AdminClient | None = None
        self.owned: Any = None
        self.http: str = ""
        #: The in-process applications of local testing mode (`serve.run(...,
        #: _local_testing_mode=True)`), if any.
        self.local: LocalPlane | None = None


_session = _Session()


def _connect(http_options: dict[str, Any] | None = None,
             grpc_options: dict[str, Any] | None = None) -> AdminClient:
    with _session.lock:
        if _session.client is not None:
            return _session.client
        from weir.auth import cluster_token
        from weir.cli.cluster_state import running_cluster
        from weir.cli.local_cluster import LocalCluster
        from weir.cli.locate import leader_via_etcd
        from weir.config.tls import tls_files

        address = os.environ.get("WEIR_ADDRESS", "")
        known = cluster_context.cluster()
        if not address and known.etcd_endpoints:
            # Inside a replica (or with WEIR_ETCD_ENDPOINTS): the cluster is known; ask etcd
            # where its leader's admin API is.
            address = known.controllers[0] if known.controllers else leader_via_etcd(
                known.etcd_endpoints)
            _session.client = AdminClient(address)
            return _session.client
        info = None if address else running_cluster()
        if address:
            coords = cluster_context.ClusterCoordinates(
                os.environ.get("WEIR_ETCD_ENDPOINTS", ""), tuple(address.split(",")))
        elif info is not None:
            coords = cluster_context.ClusterCoordinates(info.etcd_endpoints,
                                                        tuple(info.controllers))
            address = info.address
            _session.http = info.http
        else:
            http = {**_defaults(HTTPOptionsSchema), **(http_options or {})}
            grpc = {**_defaults(GrpcOptionsSchema), **(grpc_options or {})}
            cluster = LocalCluster(http_host=http["host"], http_port=int(http["port"]),
                                   admin_port=int(os.environ.get("WEIR_ADMIN_PORT", "9500")),
                                   grpc_port=int(grpc["port"])
                                   if grpc["grpc_servicer_functions"] else None,
                                   token=cluster_token(), tls=tls_files(http))
            info = cluster.start()
            _session.owned = cluster
            _session.http = info.http
            atexit.register(shutdown)
            coords = cluster_context.ClusterCoordinates(info.etcd_endpoints,
                                                        tuple(info.controllers))
            address = info.address
        cluster_context.set_cluster(coords)
        _session.client = AdminClient(address)
        return _session.client


def _defaults(schema: type[BaseModel]) -> dict[str, Any]:
    return {name: f.get_default(call_default_factory=True)
            for name, f in schema.model_fields.items()}


def start(proxy_location: str | None = None, http_options: dict[str, Any] | None = None,
          grpc_options: dict[str, Any] | None = None,
          logging_config: dict[str, Any] | None = None, *,
          http_middlewares: list[Any] | None = None, detached: bool = False,
          dedicated_cpu: bool = False, **unexpected: NoReturn) -> None:
    """Start (or connect to) the cluster and set its HTTP and gRPC options.

    Middlewares (Ray's `http_middlewares`, or `http_options["middlewares"]`) may be
    starlette `Middleware` objects, middleware classes or import paths; objects reach the
    proxies, which are other processes, cloudpickled in the options (`weir.config.middlewares`).
    `grpc_options` with `grpc_servicer_functions` also opens the embedded cluster's gRPC
    ingress. `logging_config` sets how the cluster's controllers and proxies log
    (`weir.system_logging`). Ray's proxy_location, detached and dedicated_cpu are accepted
    and warn that Weir ignores them; any other keyword is a TypeError.
    """
    refuse_unknown("serve.start", start, unexpected)
    ray_options.warn_ignored(ray_options.START, {
        "proxy_location": proxy_location, "detached": detached or None,
        "dedicated_cpu": dedicated_cpu or None}, stacklevel=2)
    _warn_ignored_http_options(http_options)
    try:
        system_logging = check_logging_config(logging_config)
    except ValueError as exc:
        raise ValueError(f"serve.start(logging_config=...): {exc}") from None
    config = _start_config(http_options, grpc_options, http_middlewares)
    if system_logging is not None:
        config["logging_config"] = system_logging
    client = _connect(config.get("http_options"), config.get("grpc_options"))
    if len(config) > 1:
        client.deploy(config, partial=True)


def _warn_ignored_http_options(http_options: Any) -> None:
    """Warn for each http option Weir ignores (root_path, ...) that `serve.start` was given
    a value other than its default: the same registry entries as a config file's."""
    given = dict(http_options or {})
    defaults = _defaults(HTTPOptionsSchema)
    prefix = "http_options."
    for dotted in ray_options.ignored_names(ray_options.CONFIG):
        name = dotted.removeprefix(prefix)
        if dotted.startswith(prefix) and given.get(name, defaults[name]) != defaults[name]:
            ray_options.warn_ignored(ray_options.CONFIG, {dotted: given[name]},
                                     at="serve.start(http_options=...)", stacklevel=3)


def _start_config(http_options: dict[str, Any] | None, grpc_options: dict[str, Any] | None,
                  http_middlewares: list[Any] | None = None) -> dict[str, Any]:
    """The partial deploy `serve.start` sends: the cluster options given, no applications.
    Middleware objects are pickled here (import paths travel as they are). Pure."""
    config: dict[str, Any] = {"applications": []}
    http = dict(http_options or {})
    given = [*http.get("middlewares", []), *(http_middlewares or [])]
    if given:
        http["middlewares"] = [m if isinstance(m, str) else pickled_entry(m) for m in given]
    if http:
        config["http_options"] = http
    if grpc_options:
        config["grpc_options"] = dict(grpc_options)
    return config


def _import_path_of(app: Application) -> str:
    """Where the ingress comes from, for `weir config` (the app itself ships by value).
    A class defined inside a function has no importable path: its deployment name stands in.
    """
    target = app.deployment.func_or_class
    module = getattr(target, "__module__", "__main__") or "__main__"
    attr = getattr(target, "__qualname__", "")
    if not attr or not all(part.isidentifier() for part in attr.split(".")):
        attr = "".join(c if c.isalnum() or c == "_" else "_" for c in app.deployment.name)
        attr = attr if attr.isidentifier() else f"app_{attr}"
    return f"{module}:{attr}"


def wait_for_app(client: AdminClient, name: str, timeout: float = DEPLOY_WAIT_S,
                 since: float = 0.0) -> dict[str, Any]:
    """Poll until the app is RUNNING (returns its status) or DEPLOY_FAILED (raises), at a
    deployment_timestamp of at least `since`. `weir.cli.deploy_wait.wait_for_deploy` tells
    a deploy's own status apart exactly; use it for a deploy you just sent."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        apps = client.get_status(name).get("applications", {})
        last = apps.get(name, {})
        app_status = last.get("app_status", {})
        if app_status.get("deployment_timestamp", 0) >= since:
            if app_status.get("status") == "RUNNING":
                return last
            if app_status.get("status") == "DEPLOY_FAILED":
                raise RayServeException(
                    f"application {name!r} failed to deploy: {app_status.get('message')}")
        time.sleep(0.05)
    raise RayServeException(f"application {name!r} did not become RUNNING within "
                            f"{timeout:.0f} s; last status: {last.get('app_status')}")


def run(target: Application, blocking: bool = False, name: str = "default",
        route_prefix: str | None = "/", logging_config: dict[str, Any] | None = None,
        _local_testing_mode: bool = False, external_scaler_enabled: bool = False,
        **unexpected: NoReturn) -> DeploymentHandle:
    """Deploy `target` as application `name` and return a handle to its ingress.

    `logging_config` (a `LoggingConfig` or a mapping of its fields) applies to every
    deployment of the app that sets none of its own. Ray's _local_testing_mode and
    external_scaler_enabled are accepted and warn that Weir ignores them; any other keyword
    is a TypeError.
    """
    refuse_unknown("serve.run", run, unexpected)
    try:
        app_logging = check_logging_config(logging_config)
    except ValueError as exc:
        raise ValueError(f"serve.run(logging_config=...): {exc}") from None
    ray_options.warn_ignored(ray_options.RUN, {
        "external_scaler_enabled": external_scaler_enabled or None}, stacklevel=2)
    if isinstance(target, Deployment):
        target = target.bind()
    built = with_app_logging_config(build_app(target, name), app_logging)
    if _local_testing_mode:
        return _run_locally(built)
    client = _connect()
    runtime_env = {"working_dir": os.getcwd()}
    config = {"applications": [{
        "name": name, "route_prefix": route_prefix, "import_path": _import_path_of(target),
        "runtime_env": runtime_env}]}
    before = mark_before(client)
    pickled = {name: built.to_json().encode()}
    try:
        reply = client.deploy(config, partial=True, pickled_apps=pickled)
    except CodeNotShipped as exc:
        if not isinstance(exc.__cause__, PackageTooLarge):
            raise
        # The app itself travels by value; the current directory only serves its imports.
        # Too big to ship (a home directory, say): it still works where it exists.
        structlog.get_logger("weir.serve").warning(
            "the current directory is too large to ship to other machines; replicas "
            "import from it only where it exists", working_dir=os.getcwd(), reason=str(exc))
        reply = client.deploy(config, partial=True, pickled_apps=pickled, ship_code=False)
    # Only once the new version runs, as Ray's serve.run: not while the last one still does.
    wait_for_deploy(client, [name], DeployMark(before, changed_count(reply.message)))
    handle = DeploymentHandle(built.ingress, name)
    if blocking:
        print(f"Application {name!r} is running at http://{_session.http}{route_prefix or ''}",
              file=sys.stderr)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            shutdown()
    return handle


def _run_locally(built: BuiltApp) -> DeploymentHandle:
    """Local testing mode: construct the app's deployments in this process and return a
    handle to its ingress (`weir.local_testing`)."""
    with _session.lock:
        if _session.local is None:
            _session.local = LocalPlane()
            cluster_context.use_local_plane(_session.local)
        plane = _session.local
    cluster_context.submit(plane.deploy(built)).result()
    return DeploymentHandle(built.ingress, built.name)


def status() -> ServeStatus:
    """The status of every application on the cluster."""
    return ServeStatus.from_document(_connect().get_status())


def delete(name: str, _blocking: bool = True) -> None:
    """Delete an application; with _blocking, wait until it is gone."""
    if _session.local is not None:
        _session.local.delete(name)
        return
    client = _connect()
    client.delete_apps([name])
    deadline = time.monotonic() + 60
    while _blocking and time.monotonic() < deadline:
        if name not in client.get_status().get("applications", {}):
            return
        time.sleep(0.05)


def get_app_handle(name: str) -> DeploymentHandle:
    """A handle to the ingress deployment of a running application."""
    client = _connect()
    app = client.get_status(name).get("applications", {}).get(name)
    if app is None:
        raise RayServeException(f"application {name!r} does not exist")
    deployments = app["deployment_statuses"]
    # Deployments are listed ingress first.
    ingress = deployments[0]["name"] if deployments else ""
    return DeploymentHandle(ingress, name)


def get_deployment_handle(deployment_name: str,
                          app_name: str | None = None) -> DeploymentHandle:
    """A handle to any deployment of an application (works inside replicas too). Without
    `app_name`: inside a replica, its own application (as in Ray), else "default"."""
    if app_name is None:
        replica = replica_context_or_none()
        app_name = replica.app_name if replica is not None else "default"
    if not cluster_context.cluster():
        _connect()
    return DeploymentHandle(deployment_name, app_name)


def shutdown() -> None:
    """Delete every application; stop the embedded cluster if this process started it."""
    with _session.lock:
        owned, client = _session.owned, _session.client
        _session.owned = _session.client = None
        _session.local = None
    cluster_context.reset()
    if owned is not None:
        owned.stop()
    elif client is not None:
        try:
            names = list(client.get_status().get("applications", {}))
            if names:
                client.delete_apps(names)
        except ClusterError:
            pass
