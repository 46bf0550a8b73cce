"""The gRPC ingress: user protos end to end, bytes through the proxy, load shedding."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from tests.e2e.apps import greeter_pb2, greeter_pb2_grpc
from tests.e2e.conftest import ROOT, RunningCluster, start_cluster


@pytest.fixture(scope="module")
def grpc_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path_factory, grpc_port=0)


def test_unary_call_and_load_shedding(grpc_cluster: RunningCluster) -> None:
    grpc_cluster.client.deploy({
        "grpc_options": {"grpc_servicer_functions": [
            "tests.e2e.apps.greeter_pb2_grpc.add_GreeterServicer_to_server"]},
        "applications": [{"name": "greeter", "import_path": "tests.e2e.apps.grpc_app:app",
                          "route_prefix": None, "runtime_env": {"working_dir": str(ROOT)}}],
    })
    grpc_cluster.wait_status("greeter", "RUNNING")
    with grpc.insecure_channel(grpc_cluster.info.grpc) as channel:
        stub = greeter_pb2_grpc.GreeterStub(channel)
        reply = stub.Greet(greeter_pb2.GreetRequest(name="weir"),
                           metadata=[("application", "greeter")], timeout=10)
        assert reply.message == "Hello, weir!"
        # One running, one queued, the rest shed at once with RESOURCE_EXHAUSTED.
        slow = greeter_pb2.GreetRequest(name="slow", sleep_s=1.5)
        with ThreadPoolExecutor(6) as pool:
            calls = [pool.submit(stub.Greet, slow, timeout=10) for _ in range(6)]
            codes = []
            for call in calls:
                try:
                    call.result()
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.append(exc.code())
        assert codes.count(grpc.StatusCode.OK) == 2
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 4
        with pytest.raises(grpc.RpcError) as info:
            stub.Greet(greeter_pb2.GreetRequest(name="x"),
                       metadata=[("application", "nope")], timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
