"""HTTPS on the proxies (Ray's http_options.ssl_* and `weir start --ssl-*`), on hypercorn
and uvicorn, and the ingress's header deadline: a client that trickles its headers is
dropped while others are served."""

from __future__ import annotations

import socket
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import ROOT, RunningCluster, start_cluster, wait_for
from tests.e2e.self_signed import self_signed
from weir.cli.admin_client import ConfigRejected
from weir.config.tls import TlsFiles
from weir.processes import free_port, spawn, terminate

#: A short keep-alive: on hypercorn it is also the header deadline (see the test below).
KEEP_ALIVE = {"keep_alive_timeout_s": 1.5}
APP = {"name": "echo", "import_path": "tests.e2e.apps.basic:Echo", "route_prefix": "/echo",
       "runtime_env": {"working_dir": str(ROOT)}}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            certs: tuple[Path, Path]) -> Iterator[RunningCluster]:
    cert, key = certs
    for running in start_cluster(tmp_path_factory, tls=TlsFiles(str(cert), str(key))):
        running.url = f"https://{running.info.http}"
        running.client.deploy({"http_options": KEEP_ALIVE, "applications": [APP]},
                              partial=True)
        running.wait_status("echo", "RUNNING")
        yield running


def test_hypercorn_serves_https(cluster: RunningCluster, certs: tuple[Path, Path]) -> None:
    reply = requests.get(cluster.url + "/echo/hi", verify=str(certs[0]), timeout=10)
    assert reply.status_code == 200 and reply.json()["path"] == "/echo/hi"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(cluster.url + "/echo", timeout=10)  # not a trusted CA by default
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://{cluster.info.http}/echo", timeout=10)  # plain HTTP: refused


def test_bad_certificate_path_is_refused_at_deploy(cluster: RunningCluster,
                                                   certs: tuple[Path, Path]) -> None:
    before = cluster.client.get_config()
    bad = {"http_options": {**KEEP_ALIVE, "ssl_certfile": "/nonexistent/cert.pem",
                            "ssl_keyfile": str(certs[1])},
           "applications": [{**APP, "deployments": [{"name": "Echo", "num_replicas": 1}]}]}
    with pytest.raises(ConfigRejected, match=r"ssl_certfile.*/nonexistent/cert.pem"):
        cluster.client.deploy(bad)
    assert cluster.client.get_config() == before
    reply = requests.get(cluster.url + "/echo/", verify=str(certs[0]), timeout=10)
    assert reply.status_code == 200


def _tls_socket(address: str) -> ssl.SSLSocket:
    host, port = address.rsplit(":", 1)
    context = ssl._create_unverified_context()
    raw = socket.create_connection((host, int(port)), timeout=10)
    return context.wrap_socket(raw, server_hostname=host)


def seconds_until_dropped(address: str, limit_s: float) -> float | None:
    """Trickle a request's headers one line every 0.2 s; how long until the proxy closed the
    connection (None: still open after `limit_s`)."""
    sock = _tls_socket(address)
    started = time.monotonic()
    try:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: weir\r\n")
        sock.settimeout(0.2)
        i = 0
        while time.monotonic() - started < limit_s:
            try:
                if sock.recv(4096) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                pass  # the pause between two lines of the trickle
            except (ssl.SSLError, OSError):
                return time.monotonic() - started
            try:
                sock.sendall(f"x-trickle-{i}: {i}\r\n".encode())
            except OSError:
                return time.monotonic() - started
            i += 1
        return None
    finally:
        sock.close()


def _served_while(address: str, cert: Path) -> None:
    reply = requests.get(f"https://{address}/echo", verify=str(cert), timeout=5)
    assert reply.status_code == 200


def test_hypercorn_drops_a_client_trickling_headers(cluster: RunningCluster,
                                                    certs: tuple[Path, Path]) -> None:
    # hypercorn's idle timer (keep_alive_timeout_s, here 1.5 s) runs until the headers are
    # complete: it is the header deadline there. (The request before sets the keep-alive.)
    _served_while(cluster.info.http, certs[0])
    dropped = seconds_until_dropped(cluster.info.http, 6.0)
    _served_while(cluster.info.http, certs[0])
    assert dropped is not None and 1.2 < dropped < 4.0


@pytest.fixture(scope="module")
def uvicorn_proxy(cluster: RunningCluster, certs: tuple[Path, Path],
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second proxy of the cluster, on uvicorn, HTTPS, with a 1 s header deadline."""
    pytest.importorskip("uvicorn")
    port = free_port()
    logs = tmp_path_factory.mktemp("uvicorn-proxy")
    proc = spawn([sys.executable, "-m", "weir.proxy", "--etcd", cluster.info.etcd_endpoints,
                  "--http-port", str(port), "--http-server", "uvicorn",
                  "--ssl-certfile", str(certs[0]), "--ssl-keyfile", str(certs[1]),
                  "--header-timeout-s", "1"], log_path=logs / "proxy.log", detached=False)
    address = f"127.0.0.1:{port}"
    try:
        def routes_echo() -> bool:
            try:
                return requests.get(f"https://{address}/echo", verify=str(certs[0]),
                                    timeout=2).status_code == 200
            except requests.exceptions.ConnectionError:
                assert proc.poll() is None, (logs / "proxy.log").read_text()
                return False

        wait_for(routes_echo, 30, "the uvicorn proxy to serve /echo over HTTPS")
        yield address
    finally:
        terminate(proc, 5)


def test_uvicorn_serves_https_and_drops_a_trickling_client(uvicorn_proxy: str,
                                                           certs: tuple[Path, Path]) -> None:
    dropped = seconds_until_dropped(uvicorn_proxy, 5.0)
    _served_while(uvicorn_proxy, certs[0])
    assert dropped is not None and 0.8 < dropped < 3.0


def test_too_many_headers_is_431(uvicorn_proxy: str, cluster: RunningCluster,
                                 certs: tuple[Path, Path]) -> None:
    headers = {f"x-h{i}": "v" for i in range(150)}
    for address in (uvicorn_proxy, cluster.info.http):
        reply = requests.get(f"https://{address}/echo", headers=headers, verify=str(certs[0]),
                             timeout=10)
        assert reply.status_code == 431 and "at most 100" in reply.text
