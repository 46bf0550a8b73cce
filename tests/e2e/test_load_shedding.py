"""Seed 002's load-shedding example, word for word, and end-to-end timeouts."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.e2e.conftest import ROOT, RunningCluster, driver_connected, wait_for
from weir import serve


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


def test_a_shed_request_never_reaches_the_replica_and_gets_503_at_once(
        cluster: RunningCluster, tmp_path: Path) -> None:
    cluster.deploy_app("single", "tests.e2e.apps.admission:app")
    cluster.wait_status("single", "RUNNING")
    calls = tmp_path / "calls"
    url = f"{cluster.url}/single?log={calls}"
    wait_for(lambda: requests.get(url, timeout=10).status_code == 200, 10, "the route")
    calls.unlink()
    pool = ThreadPoolExecutor(8)
    try:
        holding = pool.submit(requests.get, url + "&s=3", timeout=30)
        wait_for(lambda: calls.exists() and calls.read_text() == "call\n", 10,
                 "the replica to take the first call")
        started = time.monotonic()
        shed = list(pool.map(lambda _: requests.get(url, timeout=30), range(8)))
        assert time.monotonic() - started < 1.5  # while the first call still runs (3 s)
        assert [r.status_code for r in shed] == [503] * 8
        assert all(r.headers["retry-after"] == "1" for r in shed)
        assert all(r.text.startswith("Request dropped due to backpressure") for r in shed)
        assert not holding.done()
        assert holding.result().status_code == 200
        assert calls.read_text() == "call\n"  # none of the 8 reached the replica
    finally:
        pool.shutdown(wait=True)


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

