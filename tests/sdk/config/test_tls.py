"""HTTPS options: the shape rules (pure) and the file checks on real PEM files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.self_signed import new_key, self_signed, write_key
from weir.config.config_file import config_from_json
from weir.config.errors import ConfigError
from weir.config.tls import (
    TlsError,
    TlsFiles,
    proxy_flags,
    server_context,
    shape_problem,
    tls_files,
    tls_problem,
)


def test_absent_options_mean_plain_http() -> None:
    files = tls_files({"ssl_certfile": None, "port": 8000})
    assert files == TlsFiles() and not files.enabled
    assert tls_problem({}) == ""
    assert proxy_flags(files) == []


@pytest.mark.parametrize(("files", "needle"), [
    (TlsFiles(certfile="c.pem"), "ssl_keyfile is not"),
    (TlsFiles(keyfile="k.pem"), "ssl_certfile is not"),
    (TlsFiles(ca_certs="ca.pem"), "need ssl_certfile"),
])
def test_shape_problems_name_the_missing_field(files: TlsFiles, needle: str) -> None:
    assert needle in shape_problem(files)


def test_config_schema_refuses_a_certificate_without_its_key() -> None:
    with pytest.raises(ConfigError, match="ssl_keyfile"):
        config_from_json('{"http_options": {"ssl_certfile": "/x.pem"}}')


def test_a_matching_pair_loads(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_context(TlsFiles(str(cert), str(key)))
    assert tls_problem({"ssl_certfile": str(cert), "ssl_keyfile": str(key)}) == ""
    assert proxy_flags(TlsFiles(str(cert), str(key), "secret")) == [
        "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    _, key = self_signed(tmp_path)
    problem = tls_problem({"ssl_certfile": str(tmp_path / "nope.pem"), "ssl_keyfile": str(key)})
    assert "http_options.ssl_certfile" in problem and "nope.pem" in problem


def test_a_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    other = write_key(new_key(), tmp_path / "other.pem")
    with pytest.raises(TlsError, match="cannot be used together"):
        server_context(TlsFiles(str(cert), str(other)))


def test_an_encrypted_key_needs_its_password(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, password="s3cret")
    server_context(TlsFiles(str(cert), str(key), keyfile_password="s3cret"))
    with pytest.raises(TlsError, match="ssl_keyfile_password"):
        server_context(TlsFiles(str(cert), str(key), keyfile_password="wrong"))


def test_a_ca_bundle_that_is_not_pem_is_named(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate")
    with pytest.raises(TlsError, match="ssl_ca_certs"):
        server_context(TlsFiles(str(cert), str(key), ca_certs=str(junk)))
    server_context(TlsFiles(str(cert), str(key), ca_certs=str(cert)))


def test_a_local_cluster_refuses_bad_files_before_starting_anything(tmp_path: Path) -> None:
    from weir.cli.local_cluster import LocalCluster

    cert, _ = self_signed(tmp_path)
    other = write_key(new_key(), tmp_path / "other.pem")
    cluster = LocalCluster(tls=TlsFiles(str(cert), str(other)))
    with pytest.raises(RuntimeError, match=r"cannot serve HTTPS.*cannot be used together"):
        cluster.start()
    assert cluster.info is None and cluster.spawned_pids == []
