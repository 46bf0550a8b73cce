"""DeploymentHandle and DeploymentResponse from a driver and inside replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.conftest import RunningCluster, driver_connected, wait_for
from weir import serve
from weir.config import ray_options
from weir.exceptions import IgnoredRayOptionWarning, UserCodeError


@pytest.fixture(scope="module")
def composed(cluster: RunningCluster) -> Iterator[RunningCluster]:
    cluster.deploy_app("composed", "tests.e2e.apps.composed:app")
    cluster.wait_status("composed", "RUNNING")
    with driver_connected(cluster):
        yield cluster


def test_composed_app_over_http_under_50_concurrent(composed: RunningCluster) -> None:
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda x: composed.get(f"/composed?x={x}").json(), range(50)))
    assert results == [{"doubled": 2 * x, "incremented": x + 1, "chained": 2 * x + 1}
                       for x in range(50)]


def test_handle_from_driver_sync_and_methods(composed: RunningCluster) -> None:
    handle = serve.get_deployment_handle("Doubler", "composed")
    assert handle.remote(21).result(timeout_s=10) == 42
    # Concurrent calls spread over both replicas (sequential ones may stick to one: the
    # other's reported depth can lag by a report interval).
    pids = {r.result() for r in [handle.pid.remote() for _ in range(30)]}
    assert len(pids) == 2
    assert handle.options(method_name="pid").remote().result() in pids
    ingress = serve.get_app_handle("composed")
    assert ingress.sync_path.remote(5).result() == 11


def test_handle_awaited_in_async_code(composed: RunningCluster) -> None:
    handle = serve.get_deployment_handle("Doubler", "composed")
    inc = serve.get_deployment_handle("Incrementer", "composed")

    async def main() -> list[int]:
        chained = inc.remote(handle.remote(3))
        return list(await asyncio.gather(handle.remote(1), handle.remote(2), chained))

    assert asyncio.run(main()) == [2, 4, 7]


def test_remote_error_carries_type_and_traceback(composed: RunningCluster) -> None:
    handle = serve.get_deployment_handle("Doubler", "composed")
    with pytest.raises(UserCodeError) as info:
        handle.fail.remote().result()
    assert info.value.error_type == "KeyError"
    assert "missing on purpose" in str(info.value)
    assert "Traceback" in info.value.traceback_text
    assert isinstance(info.value, serve.RayServeException)


def test_cancelling_a_response_cancels_the_replica_work(composed: RunningCluster) -> None:
    handle = serve.get_deployment_handle("Doubler", "composed")
    before = sum(handle.cancelled_count.remote().result() for _ in range(10)) // 10
    response = handle.slow.remote(10)
    # Let the call reach a replica, then cancel it.
    wait_for(lambda: any(r["ongoing"] for r in composed.client.list_replicas()
                         if r["deployment"] == "Doubler"), 5, "the call to start")
    response.cancel()
    wait_for(lambda: any(handle.cancelled_count.remote().result() > before for _ in range(6)),
             5, "the replica to cancel the work")


def test_streaming_handle(composed: RunningCluster) -> None:
    handle = serve.get_deployment_handle("Doubler", "composed").options(
        method_name="count_to", stream=True)
    assert list(handle.remote(5)) == [0, 1, 2, 3, 4]

    async def collect() -> list[int]:
        return [i async for i in handle.remote(3)]

    assert asyncio.run(collect()) == [0, 1, 2]


def test_handles_by_name_inside_a_replica(composed: RunningCluster) -> None:
    composed.deploy_app("lookup", "tests.e2e.apps.composed:lookup")
    composed.wait_status("lookup", "RUNNING")
    assert composed.get("/lookup").json() == {"doubled": 8, "via_app": 3}


def test_rays_options_weir_ignores_warn_and_change_nothing(composed: RunningCluster) -> None:
    from tests.e2e.apps.composed import Doubler

    ray_options.forget_warnings()
    with pytest.warns(IgnoredRayOptionWarning) as seen:
        handle = serve.run(Doubler.options(num_replicas=1).bind(), name="ray_opts",
                           route_prefix="/ray_opts", external_scaler_enabled=True)
        assert handle.options(_prefer_local_routing=True).remote(4).result(timeout_s=30) == 8
    assert sorted(str(w.message).split(":")[0] for w in seen
                  if issubclass(w.category, IgnoredRayOptionWarning)) == [
        "Weir ignores the DeploymentHandle.options() option '_prefer_local_routing'",
        "Weir ignores the serve.run() option 'external_scaler_enabled'"]
    with pytest.raises(TypeError, match="'nmae'"):
        serve.run(Doubler.bind(), nmae="typo")  # type: ignore[arg-type]
    serve.delete("ray_opts")
    assert "ray_opts" not in composed.client.get_status().get("applications", {})
