"""What the `weir` commands share: their common options, one-line failures, confirmation,
reading config files and building an application's config from an import path."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml

from weir.etcd.endpoints import (
    CA_FILE_ENV,
    CERT_FILE_ENV,
    KEY_FILE_ENV,
    PASSWORD_FILE_ENV,
    USER_ENV,
)

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


def _exported_as(variable: str) -> Any:
    """An option callback that puts the value in this process's environment, which the
    etcd client of this command and of every server it starts reads
    (`weir.etcd.endpoints`)."""

    def export(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value:
            os.environ[variable] = str(value)

    return export


def _etcd_option(flag: str, variable: str, help_text: str, *, is_file: bool) -> Any:
    return click.option(
        flag, default=None, expose_value=False, callback=_exported_as(variable),
        type=click.Path(exists=True, dir_okay=False) if is_file else str,
        help=f"{help_text} [default: {variable}].")


#: How `weir start` reaches an etcd that checks who calls (--etcd or --join): its user and
#: client TLS. The password is never a flag (the process list would show it):
#: WEIR_ETCD_PASSWORD, or --etcd-password-file.
etcd_security_options = [
    _etcd_option("--etcd-user", USER_ENV,
                 "etcd user (etcd's own authentication); its password comes from "
                 "WEIR_ETCD_PASSWORD or --etcd-password-file", is_file=False),
    _etcd_option("--etcd-password-file", PASSWORD_FILE_ENV,
                 "A file holding the etcd user's password", is_file=True),
    _etcd_option("--etcd-ca-file", CA_FILE_ENV,
                 "CA bundle (PEM) that signed etcd's server certificate; turns TLS on",
                 is_file=True),
    _etcd_option("--etcd-cert-file", CERT_FILE_ENV,
                 "Client certificate (PEM) for etcd's --client-cert-auth", is_file=True),
    _etcd_option("--etcd-key-file", KEY_FILE_ENV,
                 "The client certificate's private key (PEM)", is_file=True),
]


def with_etcd_security_options(command: Any) -> Any:
    """Add --etcd-user, --etcd-password-file and the etcd TLS file options to a command;
    each sets its WEIR_ETCD_* variable for the command and the servers it starts."""
    for option in reversed(etcd_security_options):
        command = option(command)
    return command


#: `--proxy-workers N`: the proxy's processes on this machine (`weir.proxy.workers`).
proxy_workers_option = click.option(
    "--proxy-workers", default=1, show_default=True, type=click.IntRange(min=1),
    help="Proxy processes sharing the HTTP and gRPC ports (SO_REUSEPORT), for machines with "
         "more cores; each admits ceil(max_queued_requests / N) queued requests.")


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
        return config_dict(load_config_file(config_or_import_path))
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


def load_config_file(path: str) -> Any:
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


def config_dict(schema: Any) -> dict[str, Any]:
    return schema.model_dump(mode="json", exclude_unset=True)  # type: ignore[no-any-return]
