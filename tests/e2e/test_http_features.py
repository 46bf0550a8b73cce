"""The FAQ's HTTP features end to end (seed 003): middlewares in the proxy (from
serve.start and from a config file), X-SERVE-CALL-METHOD, asyncio and thread-pool
concurrency, large and too-large bodies, HTTP streaming, nested handles.

All against one real local cluster; every test that changes http_options sets the ones it
needs, and `options` puts the defaults back after it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from tests.e2e.conftest import ROOT, RunningCluster, driver_connected, wait_for
from weir import serve
from weir.cli.admin_client import ConfigRejected

APPS = "tests.e2e.apps.http_features"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def apps(cluster: RunningCluster) -> RunningCluster:
    cluster.deploy_app("features", f"{APPS}:features")
    cluster.deploy_app("nested", f"{APPS}:nested")
    cluster.wait_status("features", "RUNNING")
    cluster.wait_status("nested", "RUNNING")
    return cluster


def set_http_options(cluster: RunningCluster, **options: Any) -> None:
    """Replace the cluster's http_options (partial deploy: the apps stay)."""
    cluster.client.deploy({"http_options": options, "applications": []}, partial=True)


@pytest.fixture
def options(apps: RunningCluster) -> Iterator[RunningCluster]:
    """The cluster; its http_options are back to the defaults (and in force) afterwards."""
    yield apps
    set_http_options(apps)
    wait_for(lambda: "x-weir-tag" not in apps.get("/features").headers
             and "access-control-allow-origin" not in apps.get(
                 "/features", headers={"Origin": "https://a.example"}).headers
             and call(apps, "echo", http_method="POST", data=b"x" * 5000).status_code == 200,
             30, "the default http_options to be in force")


def call(cluster: RunningCluster, method: str, path: str = "/features", *,
         http_method: str = "GET", **kw: Any) -> requests.Response:
    """An HTTP call to another method of the ingress (X-SERVE-CALL-METHOD)."""
    headers = {"X-SERVE-CALL-METHOD": method, **kw.pop("headers", {})}
    return requests.request(http_method, cluster.url + path, headers=headers,
                            timeout=kw.pop("timeout", 30), **kw)


# ----------------------------------------------------------------- middlewares


def preflight(cluster: RunningCluster, origin: str, path: str = "/features") -> requests.Response:
    return requests.options(cluster.url + path, timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": "GET"})


def test_cors_middleware_from_serve_start_survives_a_proxy_restart(
        options: RunningCluster) -> None:
    with driver_connected(options):
        # The seed's example, verbatim.
        serve.start(http_middlewares=[
            Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"])])

    def cors_in_force() -> bool:
        r = preflight(options, "https://a.example")
        return r.status_code == 200 and r.headers.get("access-control-allow-origin") == "*"

    wait_for(cors_in_force, 30, "the CORS middleware to answer preflights")
    r = options.get("/features", headers={"Origin": "https://a.example"})
    assert r.text == "called __call__"
    assert r.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-methods" in preflight(options, "https://b.example").headers

    options.cluster.kill_proxy()
    options.cluster.start_proxy()
    wait_for(cors_in_force, 30, "the restarted proxy to apply the middleware again")
    r = options.get("/features", headers={"Origin": "https://c.example"})
    assert r.headers["access-control-allow-origin"] == "*"


def run_cli(cluster: RunningCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WEIR_ADDRESS": cluster.info.address}
    return subprocess.run([sys.executable, "-m", "weir.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def config_with_middlewares(tmp_path: Path, middlewares: list[str]) -> Path:
    """A config file holding this module's two apps and the given middlewares."""
    apps = "\n".join(
        f"- name: {name}\n  route_prefix: /{name}\n  import_path: {APPS}:{name}\n"
        f"  runtime_env: {{working_dir: {ROOT}}}" for name in ("features", "nested"))
    path = tmp_path / f"config-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(f"http_options:\n  middlewares: {middlewares}\napplications:\n{apps}\n")
    return path


def test_middlewares_by_import_path_from_a_config_file(
        options: RunningCluster, tmp_path: Path) -> None:
    good = [f"{APPS}:TagMiddleware", f"{APPS}:cors_for_example"]
    deployed = run_cli(options, "deploy", str(config_with_middlewares(tmp_path, good)))
    assert deployed.returncode == 0, deployed.stderr

    def tagged() -> bool:
        return options.get("/features").headers.get("x-weir-tag") == "config"

    wait_for(tagged, 30, "the config's middlewares to be in force")
    r = preflight(options, "https://example.com")
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://example.com"
    # Ray's order: the last listed (CORS) is outermost and answers the preflight itself,
    # before the inner TagMiddleware sees it.
    assert "x-weir-tag" not in r.headers
    assert preflight(options, "https://elsewhere.example").status_code == 400
    # As in Ray, the middlewares wrap the proxy's own endpoints too.
    assert options.get("/-/healthz").headers["x-weir-tag"] == "config"

    # A path the cluster cannot import is refused naming the field; nothing changes.
    bad = run_cli(options, "deploy", str(config_with_middlewares(
        tmp_path, [f"{APPS}:TagMiddleware", f"{APPS}:NoSuchMiddleware"])))
    assert bad.returncode == 1
    assert "http_options.middlewares[1]" in bad.stderr
    assert f"{APPS}:NoSuchMiddleware" in bad.stderr
    with pytest.raises(ConfigRejected, match=r"middlewares\[0\].*No module named"):
        set_http_options(options, middlewares=["no_such_module:Middleware"])
    assert options.client.get_config()["http_options"]["middlewares"] == good
    assert tagged()
    options.wait_status("features", "RUNNING")


# ----------------------------------------------------------------- methods, concurrency


def test_x_serve_call_method_calls_another_method(apps: RunningCluster) -> None:
    assert apps.get("/features").text == "called __call__"
    assert call(apps, "other").text == "called other with GET"
    assert call(apps, "other", http_method="POST").text == "called other with POST"
    missing = call(apps, "no_such_method")
    assert missing.status_code == 500 and "no method 'no_such_method'" in missing.text


def concurrent_calls(cluster: RunningCluster, method: str, n: int) -> float:
    """Seconds for n concurrent calls of `method` to answer (each checked)."""
    started = time.monotonic()
    with ThreadPoolExecutor(n) as pool:
        replies = list(pool.map(lambda _: call(cluster, method), range(n)))
    elapsed = time.monotonic() - started
    assert [r.text for r in replies] == ["slept"] * n
    return elapsed


def test_async_methods_run_concurrently_on_one_replica(apps: RunningCluster) -> None:
    # 10 sleeps of 0.5 s with max_ongoing_requests=10 on one replica: 5 s if serialized.
    elapsed = concurrent_calls(apps, "sleep_async", 10)
    assert elapsed < 2.5, f"10 concurrent 0.5 s async sleeps took {elapsed:.2f} s"


def test_sync_methods_run_in_a_bounded_thread_pool(apps: RunningCluster) -> None:
    elapsed = concurrent_calls(apps, "sleep_sync", 10)
    assert elapsed < 2.5, f"10 concurrent 0.5 s sync sleeps took {elapsed:.2f} s"
    stats = call(apps, "sync_stats").json()
    assert 2 <= stats["peak"] <= 10, stats
    assert all(name.startswith("weir-user") for name in stats["threads"]), stats
    assert len(stats["threads"]) <= 10, "the pool holds max_ongoing_requests threads"


# ----------------------------------------------------------------- bodies


def test_20_mb_body_round_trips_intact(apps: RunningCluster) -> None:
    body = random.Random(7).randbytes(20 * MB)
    started = time.monotonic()
    r = call(apps, "echo", http_method="POST", data=body)
    elapsed = time.monotonic() - started
    assert r.status_code == 200
    digest = hashlib.sha256(body).hexdigest()
    assert r.headers["x-sha256"] == digest, "the replica saw the body intact"
    assert hashlib.sha256(r.content).hexdigest() == digest, "and sent it back intact"
    print(f"20 MB echoed through proxy and replica in {elapsed:.2f} s")


def test_handler_that_ignores_a_20_mb_body_still_answers(apps: RunningCluster) -> None:
    # urllib writes the whole body before reading: the proxy must take it all in (up to
    # the body limit) after the handler answered, not close the connection on it.
    import urllib.request

    request = urllib.request.Request(
        apps.url + "/features", data=random.Random(3).randbytes(20 * MB), method="POST",
        headers={"X-SERVE-CALL-METHOD": "other"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.status == 200
        assert reply.read() == b"called other with POST"
    logs = Path(apps.info.temp_dir) / "logs"
    proxy_log = "".join(p.read_text() for p in logs.glob("proxy*"))
    assert "replica failed" not in proxy_log, "an early answer is no replica failure"
    assert apps.get("/features").text == "called __call__"


def raw_post(cluster: RunningCluster, headers: str, chunks: Iterable[bytes] = ()) -> str:
    """Send a request by hand (its body maybe unfinished) and return the status line."""
    host, port = cluster.info.http.split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(f"POST /features HTTP/1.1\r\nHost: {host}\r\n"
                     f"X-SERVE-CALL-METHOD: echo\r\n{headers}\r\n".encode())
        for chunk in chunks:
            sock.sendall(chunk)
        return status_line(sock)


def status_line(sock: socket.socket) -> str:
    """The status line of the answer on `sock` ("" if it closed without one)."""
    answer = b""
    while b"\r\n" not in answer:
        data = sock.recv(4096)
        if not data:
            break
        answer += data
    return answer.split(b"\r\n", 1)[0].decode()


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_body_past_max_request_body_bytes_gets_413(options: RunningCluster) -> None:
    set_http_options(options, max_request_body_bytes=1000)
    wait_for(lambda: call(options, "echo", http_method="POST", data=b"x" * 1001
                          ).status_code == 413, 30, "the body limit to be in force")
    within = call(options, "echo", http_method="POST", data=b"y" * 1000)
    assert within.status_code == 200 and within.content == b"y" * 1000
    # Content-Length past the limit: 413 at once, before any of the body is sent.
    assert raw_post(options, "Content-Length: 50000000\r\n") == "HTTP/1.1 413 "
    # Chunked: 413 as soon as the chunks pass the limit, though the body never ends.
    assert raw_post(options, "Transfer-Encoding: chunked\r\n",
                    [chunked(b"z" * 600), chunked(b"z" * 600)]) == "HTTP/1.1 413 "
    # A chunked body within the limit goes through whole.
    gen = call(options, "echo", http_method="POST", data=iter([b"a" * 500, b"b" * 400]))
    assert gen.status_code == 200 and gen.content == b"a" * 500 + b"b" * 400
    too_big = call(options, "echo", http_method="POST", data=iter([b"c" * 600] * 2))
    assert too_big.status_code == 413
    assert "max_request_body_bytes" in too_big.text


def body_progress(cluster: RunningCluster, key: str) -> dict[str, Any]:
    """What the `stream_times` handler has seen of the body sent with `key`."""
    return call(cluster, "body_progress", params={"key": key}).json()  # type: ignore[no-any-return]


def start_chunked_post(cluster: RunningCluster, method: str, key: str) -> socket.socket:
    """A connection that sent the headers of a chunked POST to `method` and nothing else."""
    host, port = cluster.info.http.split(":")
    sock = socket.create_connection((host, int(port)), timeout=15)
    sock.sendall(f"POST /features?key={key} HTTP/1.1\r\nHost: {host}\r\n"
                 f"X-SERVE-CALL-METHOD: {method}\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n".encode())
    return sock


def test_body_streams_to_the_handler_as_the_client_sends_it(apps: RunningCluster) -> None:
    # The client sends the second chunk only once the handler has shown, through another
    # request, that it holds the first: a proxy that waited for the whole body would leave
    # this test waiting for the first chunk until the deadline.
    key = uuid.uuid4().hex
    first, second = b"a" * 3000, b"b" * 5000
    sent_last: list[float] = []

    def chunks() -> Iterator[bytes]:
        yield first
        wait_for(lambda: body_progress(apps, key)["received"] >= len(first), 15,
                 "the handler to receive the first chunk while the body is unfinished")
        sent_last.append(time.monotonic())
        yield second

    host, port = apps.info.http.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", f"/features?key={key}", body=chunks(), encode_chunked=True,
                     headers={"X-SERVE-CALL-METHOD": "stream_times",
                              "Transfer-Encoding": "chunked"})
        reply = conn.getresponse()
        assert reply.status == 200
        seen = json.loads(reply.read())
    finally:
        conn.close()
    assert seen["received"] == len(first) + len(second)
    assert seen["state"] == "done"
    times = seen["times"]
    assert times[0] < sent_last[0] <= times[-1], (times, sent_last)


def test_client_gone_mid_body_cancels_the_call(apps: RunningCluster) -> None:
    key = uuid.uuid4().hex
    with start_chunked_post(apps, "stream_times", key) as sock:
        sock.sendall(chunked(b"x" * 100))
        wait_for(lambda: body_progress(apps, key)["received"] == 100, 15,
                 "the handler to receive the first chunk")
    wait_for(lambda: body_progress(apps, key)["state"] == "cancelled", 15,
             "the handler reading the body to be cancelled after the client left")
    assert apps.get("/features").text == "called __call__"


def test_chunked_body_past_the_limit_cancels_the_started_call(
        options: RunningCluster) -> None:
    set_http_options(options, max_request_body_bytes=1000)
    wait_for(lambda: call(options, "echo", http_method="POST", data=b"x" * 1001
                          ).status_code == 413, 30, "the body limit to be in force")
    key = uuid.uuid4().hex
    with start_chunked_post(options, "stream_times", key) as sock:
        sock.sendall(chunked(b"z" * 600))
        wait_for(lambda: body_progress(options, key)["received"] == 600, 15,
                 "the handler to receive the first chunk")
        sock.sendall(chunked(b"z" * 600))
        assert status_line(sock) == "HTTP/1.1 413 "
    wait_for(lambda: body_progress(options, key)["state"] == "cancelled", 15,
             "the call past the body limit to be cancelled on the replica")


# ----------------------------------------------------------------- streaming


@pytest.mark.parametrize("method", ["sync_stream", "async_stream", "starlette_stream"])
def test_http_streaming_delivers_each_chunk_as_it_is_produced(
        apps: RunningCluster, method: str) -> None:
    # The handler sends "first", then waits until this client, having read "first", lets
    # it go on: a chunk held back until the next one is produced would deadlock into
    # "gave up" instead.
    key = uuid.uuid4().hex
    with call(apps, method, params={"key": key}, stream=True) as r:
        assert r.status_code == 200
        assert r.headers.get("transfer-encoding") == "chunked"
        chunks = r.iter_content(chunk_size=None)
        assert next(chunks) == b"first\n"
        assert call(apps, "release", params={"key": key}).text == "released"
        assert b"".join(chunks) == b"second\n"


# ----------------------------------------------------------------- composition


def test_applications_nested_in_lists_and_dicts_become_handles(apps: RunningCluster) -> None:
    assert apps.get("/nested?x=5").json() == [6, 7, 15, 105, 1005]


def test_a_partial_deploy_clashing_with_a_running_apps_route_is_refused_by_name(
        apps: RunningCluster) -> None:
    """Valid alone, the new app takes /features, which the running app holds: the merged
    config is refused as a config error (not an internal one), and nothing changes."""
    with pytest.raises(ConfigRejected, match="route_prefix"):
        apps.deploy_app("usurper", f"{APPS}:features", route_prefix="/features")
    assert "usurper" not in apps.client.get_status().get("applications", {})
    assert apps.get("/features").status_code == 200
