"""The ingress as operators meet it, on one cluster with HTTPS and a token: HTTPS on the
proxies (Ray's http_options.ssl_* and `weir start --ssl-*`) on hypercorn and uvicorn; the
ingress's limits (a client that trickles its headers is dropped while others are served,
too many headers get 431); the status page at /-/dashboard read by a real browser (headless
Chromium: the app, its deployments and each replica's state, drawn by the page's own script
from /-/api/status; the token it asks for); `weir status --watch`; `weir deploy --wait`'s
progress and failure."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.e2e.conftest import ROOT, RunningCluster, start_cluster, wait_for
from tests.e2e.self_signed import self_signed
from weir.cli.admin_client import ConfigRejected
from weir.config.tls import TlsFiles
from weir.processes import free_port, spawn, terminate

TOKEN = "ingress-test-token"
CHROMIUM = "/usr/bin/chromium"
#: Set to regenerate docs/dashboard.png from this test (else the picture goes to tmp).
UPDATE_DOCS_ENV = "WEIR_UPDATE_DOCS"
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
    for running in start_cluster(tmp_path_factory, tls=TlsFiles(str(cert), str(key)),
                                 token=TOKEN):
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
                  "--header-timeout-s", "1"], log_path=logs / "proxy.log", detached=False,
                 env={**os.environ, "WEIR_TOKEN": TOKEN})
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


def chromium(url: str, profile: Path, *extra: str) -> str:
    """Run headless Chromium on `url` until its scripts settle; its stdout."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               # Virtual time runs until the page's fetch has answered and it has drawn.
               "--virtual-time-budget=3000", "--ignore-certificate-errors", *extra, url]
    done = subprocess.run(command, capture_output=True, timeout=60, check=True)
    return done.stdout.decode()


def test_the_api_wants_the_cluster_token(cluster: RunningCluster,
                                         certs: tuple[Path, Path]) -> None:
    def get(path: str, **kw: Any) -> requests.Response:
        return requests.get(cluster.url + path, verify=str(certs[0]), timeout=10, **kw)

    assert get("/-/api/status").status_code == 401
    assert get("/-/api/status", headers={"Authorization": "Bearer nope"}).status_code == 401
    doc = get("/-/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    [app] = doc["applications"]
    assert app["name"] == "echo" and app["status"] == "RUNNING"
    assert [d["name"] for d in app["deployments"]] == ["Echo"]
    assert {r["state"] for r in app["deployments"][0]["replicas"]} == {"RUNNING"}
    assert any(e["kind"] == "deploy" and e["app"] == "echo" for e in doc["events"])
    assert doc["config_history"][0]["applications"] == ["echo"]
    # The page itself holds no data: served to anyone; writes are refused.
    assert get("/-/dashboard").status_code == 200
    assert requests.post(cluster.url + "/-/api/status", verify=str(certs[0]),
                         timeout=5).status_code == 405


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no Chromium on this machine")
def test_the_page_draws_apps_deployments_and_replicas(cluster: RunningCluster,
                                                      tmp_path: Path) -> None:
    # Both replicas RUNNING in the status, so that the picture shows a settled app.
    wait_for(lambda: cluster.app_status("echo")["deployment_statuses"][0]
             ["replica_states"].get("RUNNING") == 2, 30, "two RUNNING replicas")
    picture = tmp_path / "dashboard.png"
    dom = chromium(f"{cluster.url}/-/dashboard#token={TOKEN}", tmp_path / "profile",
                   "--dump-dom", f"--screenshot={picture}", "--window-size=1280,900")
    assert 'data-app="echo"' in dom and 'data-deployment="Echo"' in dom
    assert dom.count('class="replica"') == 2, dom
    assert '<span class="status RUNNING">RUNNING</span>' in dom
    assert "deployed a new config" in dom  # the event log
    assert "Cannot read" not in dom and 'id="token-form" hidden' in dom
    assert picture.stat().st_size > 10_000
    if os.environ.get(UPDATE_DOCS_ENV):
        shutil.copy(picture, ROOT / "docs" / "dashboard.png")


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no Chromium on this machine")
def test_without_the_token_the_page_asks_for_it(cluster: RunningCluster,
                                                tmp_path: Path) -> None:
    dom = chromium(f"{cluster.url}/-/dashboard", tmp_path / "profile", "--dump-dom")
    assert 'id="token-form" hidden' not in dom and 'data-app="echo"' not in dom


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "weir.cli", *args]


def test_status_watch_redraws(cluster: RunningCluster) -> None:
    env = {**os.environ, "WEIR_TOKEN": TOKEN}
    proc = subprocess.Popen(_cli("status", "--watch", "--interval", "0.2", "--address",
                                 cluster.info.address), env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        drawn = ""
        deadline = time.monotonic() + 30
        while drawn.count("---") < 2 and time.monotonic() < deadline:
            drawn += proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        rest, errors = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, errors
    docs = [d for d in yaml.safe_load_all(drawn + rest) if d]
    assert len(docs) >= 2
    assert docs[0]["applications"]["echo"]["app_status"]["status"] == "RUNNING"


def test_deploy_wait_shows_progress_and_fails_with_the_reason(cluster: RunningCluster,
                                                              tmp_path: Path) -> None:
    # Last in the module: `weir deploy` replaces the whole goal.
    config = {"applications": [{"name": "broken", "route_prefix": "/broken",
                                "import_path": "tests.e2e.apps.basic:NoSuchApp",
                                "runtime_env": {"working_dir": str(ROOT)}}]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(_cli("deploy", str(path), "--wait", "--timeout", "60", "--address",
                               cluster.info.address, "--token", TOKEN),
                          cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "broken: DEPLOYING" in done.stderr  # the progress, printed as it changed
    assert "NoSuchApp" in done.stderr.splitlines()[-1]
