"""Seed 002's load-shedding example, word for word, end-to-end timeouts, admission before
the proxy's app (HTTP and gRPC), and proxy workers on one port."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import requests

from tests.e2e.apps import greeter_pb2, greeter_pb2_grpc
from tests.e2e.conftest import ROOT, RunningCluster, driver_connected, wait_for
from weir import serve
from weir.auth import TOKEN_ENV
from weir.processes import free_port, pid_runs, spawn, terminate


def test_seed_load_shedding_example(cluster: RunningCluster) -> None:
    cluster.deploy_app("slow", "tests.e2e.apps.slow:slow")
    cluster.wait_status("slow", "RUNNING")
    url = cluster.url + "/slow"
    pool = ThreadPoolExecutor(16)
    try:
        # Send 4 requests first: 2 go to the replica, 2 queue in the proxy.
        first = [pool.submit(requests.get, url, timeout=30) for _ in range(2)]
        time.sleep(0.3)
        queued = [pool.submit(requests.get, url, timeout=30) for _ in range(2)]
        time.sleep(0.3)
        assert not any(f.done() for f in first + queued)
        # 5 more are rejected at once: replica and queue are full.
        started = time.monotonic()
        rejected = [pool.submit(requests.get, url, timeout=30) for _ in range(5)]
        statuses = [f.result() for f in rejected]
        assert time.monotonic() - started < 1.0
        assert [r.status_code for r in statuses] == [503] * 5
        assert all(r.headers.get("retry-after") for r in statuses)
        # The first 4 finish with 200.
        assert [f.result().status_code for f in first + queued] == [200] * 4
    finally:
        pool.shutdown(wait=True)


@contextlib.contextmanager
def extra_proxy(cluster: RunningCluster, log: Path, *flags: str) -> Iterator[str]:
    """A second `python -m weir.proxy` for the cluster (its `flags` added); yields its URL
    once it has a route table, and stops it (and its workers) by PID."""
    port = free_port()
    proc = spawn([sys.executable, "-m", "weir.proxy", "--etcd", cluster.info.etcd_endpoints,
                  "--http-port", str(port), *flags], log_path=log,
                 env={**os.environ, TOKEN_ENV: cluster.info.token})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is None and _healthy(url), 30, "the second proxy")
        yield url
    finally:
        terminate(proc, 10)


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/-/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_a_shed_request_never_reaches_the_replica_and_gets_503_at_once(
        cluster: RunningCluster, tmp_path: Path) -> None:
    cluster.deploy_app("single", "tests.e2e.apps.admission:app")
    with contextlib.ExitStack() as stack:
        # On uvicorn admission runs in the protocol, before a request has a task (the
        # cluster's proxy runs hypercorn: there, in the front ASGI gate, as the seed
        # example above shows).
        base = stack.enter_context(
            extra_proxy(cluster, tmp_path / "proxy.log", "--http-server", "uvicorn"))
        cluster.wait_status("single", "RUNNING")
        calls = tmp_path / "calls"
        url = f"{base}/single?log={calls}"
        wait_for(lambda: requests.get(url, timeout=10).status_code == 200, 10, "the route")
        calls.unlink()
        pool = stack.enter_context(ThreadPoolExecutor(8))
        holding = pool.submit(requests.get, url + "&s=3", timeout=30)
        wait_for(lambda: calls.exists() and calls.read_text() == "call\n", 10,
                 "the replica to take the first call")
        started = time.monotonic()
        shed = list(pool.map(lambda _: requests.get(url, timeout=30), range(8)))
        assert time.monotonic() - started < 1.5  # while the first call still runs (3 s)
        assert [r.status_code for r in shed] == [503] * 8
        assert all(r.headers["retry-after"] == "1" for r in shed)
        assert all(r.text.startswith("Request dropped due to backpressure") for r in shed)
        # Written by the protocol: no task, so none of uvicorn's default `server` header.
        assert not any("server" in r.headers for r in shed)
        assert not holding.done()
        assert holding.result().status_code == 200
        assert calls.read_text() == "call\n"  # none of the 8 reached the replica


def _socket_owner(proxy_port: int, client_port: int, pids: set[int]) -> int | None:
    """Which of `pids` holds the server side of a loopback connection (from /proc)."""
    inode = ""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (int(fields[1].rsplit(":", 1)[1], 16) == proxy_port
                and int(fields[2].rsplit(":", 1)[1], 16) == client_port):
            inode = fields[9]
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
    return None


def test_two_proxy_workers_answer_on_one_port(cluster: RunningCluster, tmp_path: Path) -> None:
    with extra_proxy(cluster, tmp_path / "proxy.log", "--proxy-workers", "2",
                     "--proxy-id", "two", "--http-server", "uvicorn") as url:
        def workers() -> dict[str, int]:
            found = {p["id"]: p["pid"] for p in cluster.client.get_status()["proxies"]
                     if p["id"].startswith("two-")}
            return found if len(found) == 2 else {}

        pids = wait_for(workers, 20, "weir status to list both workers")
        assert set(pids) == {"two-w0", "two-w1"}
        port = int(url.rsplit(":", 1)[1])
        answered: set[int] = set()

        def answer_once() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/-/healthz")
                # 503 from a worker still waiting for its first route table.
                if conn.getresponse().status == 200:
                    owner = _socket_owner(port, conn.sock.getsockname()[1],
                                          set(pids.values()))
                    assert owner is not None
                    answered.add(owner)
            finally:
                conn.close()
            return len(answered) == 2

        # The kernel spreads new connections at random: both workers soon answer.
        wait_for(answer_once, 20, "both workers to answer on the port")
        assert answered == set(pids.values())
        # A worker dies with the first (PR_SET_PDEATHSIG): none is left behind.
        os.kill(pids["two-w0"], signal.SIGKILL)
        wait_for(lambda: not pid_runs(pids["two-w1"]), 10, "worker 1 to exit with worker 0")


def test_request_timeout_is_408_and_cancels_the_work(cluster: RunningCluster) -> None:
    cluster.client.deploy({
        "http_options": {"request_timeout_s": 0.5},
        "applications": [{"name": "cancel", "import_path": "tests.e2e.apps.slow:cancellable",
                          "route_prefix": "/cancel",
                          "runtime_env": {"working_dir": str(ROOT)}}],
    }, partial=True)
    cluster.wait_status("cancel", "RUNNING")
    wait_for(lambda: cluster.get("/cancel?s=0").status_code == 200, 10, "timeout in force")
    started = time.monotonic()
    r = cluster.get("/cancel?s=5")
    assert r.status_code == 408
    assert time.monotonic() - started < 2
    stats = wait_for(lambda: (s := cluster.get("/cancel/stats").json())["cancelled"] >= 1 and s,
                     5, "the replica to cancel the work")
    assert stats["cancelled"] == 1


def test_client_disconnect_cancels_the_work(cluster: RunningCluster) -> None:
    cluster.wait_status("cancel", "RUNNING")
    before = cluster.get("/cancel/stats").json()["cancelled"]
    try:
        requests.get(cluster.url + "/cancel?s=0.45", timeout=0.1)
    except requests.Timeout:
        pass
    wait_for(lambda: cluster.get("/cancel/stats").json()["cancelled"] > before, 5,
             "the disconnect to cancel the work")


def test_handles_raise_backpressure_error(cluster: RunningCluster) -> None:
    cluster.deploy_app("busyh", "tests.e2e.apps.shedding:app")
    cluster.wait_status("busyh", "RUNNING")
    with driver_connected(cluster):
        handle = serve.get_deployment_handle("Busy", "busyh")
        assert handle.remote(None).result(timeout_s=10) == "done"  # the handle sees the replica
        # A handle is a caller of its own: 1 runs, 1 waits in its queue, the rest are shed.
        responses = [handle.remote(None) for _ in range(5)]
        outcomes = []
        for r in responses:
            try:
                outcomes.append(r.result(timeout_s=10))
            except serve.BackPressureError:
                outcomes.append("shed")
        assert outcomes.count("done") == 2 and outcomes.count("shed") == 3



def test_grpc_calls_are_refused_at_the_ingress_with_this_workers_share(
        cluster: RunningCluster, tmp_path: Path) -> None:
    prefix = "tests.e2e.apps."
    cluster.client.deploy({
        # Longer than the queued calls wait (a test above sets 0.5 s).
        "http_options": {"request_timeout_s": 30},
        "grpc_options": {"grpc_servicer_functions": [
            prefix + "greeter_pb2_grpc.add_GreeterServicer_to_server"]},
        "applications": [{
            "name": "greeter3", "import_path": prefix + "grpc_app:app", "route_prefix": None,
            "runtime_env": {"working_dir": str(ROOT)},
            "deployments": [{"name": "GreeterDeployment", "max_queued_requests": 3}]}],
    }, partial=True)
    grpc_port = free_port()
    with extra_proxy(cluster, tmp_path / "proxy.log", "--proxy-workers", "2",
                     "--grpc-port", str(grpc_port)):
        cluster.wait_status("greeter3", "RUNNING")
        # One channel is one connection, to one of the 2 workers: it admits 1 running
        # (max_ongoing_requests=1) plus ceil(3 / 2) queued, not the 3 the data plane allows.
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            greet = greeter_pb2_grpc.GreeterStub(channel).Greet
            metadata = [("application", "greeter3")]

            def greets() -> bool:
                try:
                    return greet(greeter_pb2.GreetRequest(name="a"), metadata=metadata,
                                 timeout=5).message == "Hello, a!"
                except grpc.RpcError:
                    return False

            wait_for(greets, 20, "the worker to route the app")
            slow = greeter_pb2.GreetRequest(name="slow", sleep_s=1.0)
            with ThreadPoolExecutor(6) as pool:
                calls = [pool.submit(greet, slow, metadata=metadata, timeout=10)
                         for _ in range(6)]
                errors = [call.exception() for call in calls]
        shed = [(e.code(), e.details()) for e in errors if isinstance(e, grpc.RpcError)]
        assert errors.count(None) == 3
        assert len(shed) == 3
        assert {code for code, _ in shed} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert all(d.startswith("Request dropped due to backpressure") for _, d in shed)
        # Refused by the proxy's admission, before the data plane saw them (it logs each
        # call it sheds).
        assert "request shed" not in (tmp_path / "proxy.log").read_text()
    cluster.client.delete_apps(["greeter3"])
