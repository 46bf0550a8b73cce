"""`weir start` and `weir shutdown`: a cluster's machines come and go."""

from __future__ import annotations

import json

import click

from weir.auth import cluster_token, new_token
from weir.cli.admin_client import AdminClient, resolve_address
from weir.cli.options import (
    ADDRESS_HELP,
    confirm,
    fail,
    proxy_workers_option,
    token_option,
    with_etcd_security_options,
)
from weir.exceptions import ClusterError
from weir.http_servers import HTTP_SERVER_CHOICES, resolve_http_server


@click.command()
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
@with_etcd_security_options
@click.option("--etcd-port", default=None, type=int,
              help="The embedded etcd's client port [default: 2379 with --host, else free].")
@click.option("--lease-ttl", default=3.0, show_default=True, help="Leader lease TTL, seconds.")
@click.option("--etcd-binary", default=None, help="etcd server binary for the embedded etcd.")
@click.option("--grpc-port", default=None, type=int,
              help="Serve the gRPC ingress on this port (off by default).")
@click.option("--http-server", type=click.Choice(HTTP_SERVER_CHOICES), default="auto",
              show_default=True,
              help="The proxy's HTTP server; auto: uvicorn if installed (weir[fast]), "
                   "else hypercorn.")
@click.option("--no-proxy", is_flag=True, help="Run no proxy on this machine.")
@proxy_workers_option
@click.option("--num-cpus", default=None, type=float,
              help="CPUs this node offers [default: the machine's].")
@click.option("--num-gpus", default=None, type=float,
              help="GPUs this node offers [default: those nvidia-smi lists].")
@click.option("--resources", default="{}", help='Custom resources, JSON: {"name": amount}.')
@click.option("--fresh", is_flag=True,
              help="Start with no applications (forget the embedded etcd's data).")
@click.option("--ssl-certfile", default="", help="Serve HTTPS with this PEM certificate "
              "(Ray's http_options.ssl_certfile; with --ssl-keyfile).")
@click.option("--ssl-keyfile", default="", help="The certificate's PEM private key.")
@click.option("--ssl-keyfile-password", default="", envvar="WEIR_SSL_KEYFILE_PASSWORD",
              help="The key's password, if it is encrypted [env WEIR_SSL_KEYFILE_PASSWORD].")
@click.option("--ssl-ca-certs", default="", help="A PEM CA bundle (as Ray's ssl_ca_certs).")
@click.option("--token", default=None,
              help="Require this cluster token on every call to the cluster's gRPC servers "
                   "(default WEIR_TOKEN; with --host and none given, a random one is made; "
                   "none on loopback: no check). Kept in the state file for later commands; "
                   "a machine joining needs the same.")
def start(host: str, join: str, http_host: str | None, http_port: int, admin_port: int,
          controllers: int | None, etcd: str, etcd_port: int | None, lease_ttl: float,
          etcd_binary: str | None, grpc_port: int | None, http_server: str, no_proxy: bool,
          proxy_workers: int, num_cpus: float | None, num_gpus: float | None, resources: str,
          fresh: bool, ssl_certfile: str, ssl_keyfile: str, ssl_keyfile_password: str,
          ssl_ca_certs: str, token: str | None) -> None:
    """Start a long-running cluster in the background (etcd, controllers, a proxy and a
    node agent), or join another machine's with --join.

    The embedded etcd keeps its data under WEIR_HOME: a cluster restarted after a crash
    brings back its applications (`weir shutdown` deletes them; --fresh starts empty).
    """
    import shutil

    from weir.cli.cluster_state import STATE_FILE_NAME, ClusterInfo, weir_home
    from weir.cli.local_cluster import LocalCluster, NodeOptions
    from weir.config.tls import TlsFiles

    try:
        http_server = resolve_http_server(http_server)
    except ValueError as exc:
        fail(str(exc))
    # A bad file stops LocalCluster.start before any process starts.
    tls = TlsFiles(ssl_certfile, ssl_keyfile, ssl_keyfile_password, ssl_ca_certs)
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
        token=secret, tls=tls)
    if proxy_workers > 1:
        cluster.proxy_args = ("--proxy-workers", str(proxy_workers))
    try:
        info = cluster.start()
    except (RuntimeError, TimeoutError, OSError) as exc:
        fail(f"cannot start the cluster: {exc}")
    info.save(state)
    lines = ["Weir cluster " + ("joined." if join else "started."),
             f"  admin address: {info.address or '(the leader, found through etcd)'}"]
    if info.http:
        lines.append(f"  HTTP: {'https' if tls.enabled else 'http'}://{info.http}")
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


@click.command()
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
