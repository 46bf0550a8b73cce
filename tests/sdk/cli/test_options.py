"""The options commands share: how `weir start` is told to reach a secured etcd."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from weir.cli.options import with_etcd_security_options
from weir.etcd.endpoints import EtcdCredentials, TLSConfig

VARIABLES = ("WEIR_ETCD_USER", "WEIR_ETCD_PASSWORD", "WEIR_ETCD_PASSWORD_FILE",
             "WEIR_ETCD_CA_FILE", "WEIR_ETCD_CERT_FILE", "WEIR_ETCD_KEY_FILE")
AT_IMPORT = {name: os.environ.get(name) for name in VARIABLES}


def isolate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset the variables, and have them unset again after the test even if the command
    sets them (delenv alone records nothing to undo for a variable that is not set)."""
    for name in VARIABLES:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


@click.command()
@with_etcd_security_options
def reach_etcd() -> None:
    """What the servers this command starts would take from the environment."""
    click.echo(f"{EtcdCredentials.from_environ()}|{TLSConfig.from_environ()}")


def test_etcd_options_reach_the_environment_servers_inherit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch)
    files = {}
    for name in ("password", "ca.crt", "tls.crt", "tls.key"):
        files[name] = tmp_path / name
        files[name].write_text("x\n")
    result = CliRunner().invoke(reach_etcd, [
        "--etcd-user", "weir", "--etcd-password-file", str(files["password"]),
        "--etcd-ca-file", str(files["ca.crt"]), "--etcd-cert-file", str(files["tls.crt"]),
        "--etcd-key-file", str(files["tls.key"])])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"{EtcdCredentials('weir', password_file=str(files['password']))}|"
        f"{TLSConfig(str(files['ca.crt']), str(files['tls.crt']), str(files['tls.key']))}")
    assert os.environ["WEIR_ETCD_USER"] == "weir"


def test_a_missing_tls_file_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch)
    result = CliRunner().invoke(reach_etcd, ["--etcd-ca-file", "/nonexistent/ca.crt"])
    assert result.exit_code == 2 and "--etcd-ca-file" in result.output
    assert "WEIR_ETCD_CA_FILE" not in os.environ


def test_the_options_leave_no_variable_behind() -> None:
    """Runs after the tests above (file order): what they set is gone."""
    assert {name: os.environ.get(name) for name in VARIABLES} == AT_IMPORT
