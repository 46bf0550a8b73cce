"""`@serve.batch` in replicas: concurrent HTTP and handle calls gathered into batches."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.e2e.conftest import RunningCluster, driver_connected
from weir import serve
from weir.exceptions import UserCodeError


@pytest.fixture(scope="module")
def batching(cluster: RunningCluster) -> Iterator[RunningCluster]:
    for name, target in [("batched", "async_app"), ("syncbatched", "sync_app"),
                         ("fnbatched", "function_app")]:
        cluster.deploy_app(name, f"tests.e2e.apps.batching:{target}")
    for name in ("batched", "syncbatched", "fnbatched"):
        cluster.wait_status(name, "RUNNING")
    with driver_connected(cluster):
        yield cluster


def _concurrent_gets(cluster: RunningCluster, path: str, n: int) -> list[Any]:
    with ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(lambda x: cluster.get(f"{path}?x={x}", timeout=30), range(n)))
    assert [r.status_code for r in responses] == [200] * n, [r.text for r in responses]
    return [r.json() if "json" in r.headers["content-type"] else r.text for r in responses]


def test_concurrent_http_requests_share_async_batches(batching: RunningCluster) -> None:
    results = _concurrent_gets(batching, "/batched", 16)
    assert [r["x"] for r in results] == list(range(16))
    sizes = [r["batch_size"] for r in results]
    assert max(sizes) > 1, sizes
    assert max(sizes) <= 8, sizes


def test_sync_batch_method_runs_in_a_replica_thread(batching: RunningCluster) -> None:
    results = _concurrent_gets(batching, "/syncbatched", 16)
    assert [r["x"] for r in results] == list(range(16))
    assert 1 < max(r["batch_size"] for r in results) <= 8
    assert all(r["thread"].startswith("weir-user") for r in results)


def test_batched_function_deployment(batching: RunningCluster) -> None:
    results = _concurrent_gets(batching, "/fnbatched", 8)
    xs, sizes = zip(*(tuple(map(int, r.split("/"))) for r in results), strict=True)
    assert list(xs) == list(range(8))
    assert max(sizes) > 1


def test_an_exception_in_the_batch_reaches_every_caller(batching: RunningCluster) -> None:
    handle = serve.get_deployment_handle("AsyncBatcher", "batched").options(
        method_name="explode")
    responses = [handle.remote(i) for i in range(4)]
    for response in responses:
        with pytest.raises(UserCodeError) as info:
            response.result(timeout_s=30)
        assert info.value.error_type == "ValueError"
        assert "exploded" in info.value.message


def test_an_exception_over_http_is_a_500_for_all(batching: RunningCluster) -> None:
    handle_method = {"x-serve-call-method": "explode"}
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(
            lambda _: batching.get("/batched", headers=handle_method, timeout=30), range(4)))
    assert [r.status_code for r in responses] == [500] * 4


def test_a_wrong_length_is_a_clear_error(batching: RunningCluster) -> None:
    handle = serve.get_deployment_handle("AsyncBatcher", "batched").options(
        method_name="drop_one")
    responses = [handle.remote(i) for i in range(4)]
    errors = []
    for response in responses:
        with pytest.raises(UserCodeError) as info:
            response.result(timeout_s=30)
        errors.append(str(info.value))
    assert all("AsyncBatcher.drop_one returned" in e and "one result per input" in e
               for e in errors), errors[0]


def test_batched_streams_over_handles(batching: RunningCluster) -> None:
    handle = serve.get_deployment_handle("AsyncBatcher", "batched").options(
        method_name="count_down", stream=True)
    streams = [handle.remote(n) for n in (1, 3, 2)]
    assert [list(s) for s in streams] == [[1], [3, 2, 1], [2, 1]]


def test_set_max_batch_size_from_user_config(batching: RunningCluster) -> None:
    batching.deploy_app("batched2", "tests.e2e.apps.batching:async_app", deployments=[
        {"name": "AsyncBatcher", "user_config": {"max_batch_size": 2}}])
    batching.wait_status("batched2", "RUNNING")
    try:
        results = _concurrent_gets(batching, "/batched2", 8)
        assert [r["x"] for r in results] == list(range(8))
        assert max(r["batch_size"] for r in results) == 2
    finally:
        batching.client.delete_apps(["batched2"])
