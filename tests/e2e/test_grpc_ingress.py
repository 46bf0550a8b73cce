"""The gRPC ingress: user protos end to end, bytes through the proxy, all four kinds of
method routed by service name (no metadata), the call's context, request ids, load
shedding, health checking and reflection: real clients and generated code against a real
cluster (one for the module; the last test deletes an app)."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.e2e.apps import greeter_pb2, greeter_pb2_grpc, streamer_pb2, streamer_pb2_grpc
from tests.e2e.conftest import ROOT, RunningCluster, start_cluster, wait_for

Number = streamer_pb2.Number
SERVICE = "userdefined.Streamer"


@pytest.fixture(scope="module")
def grpc_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path_factory, grpc_port=0)


@pytest.fixture(scope="module")
def channel(grpc_cluster: RunningCluster) -> Iterator[grpc.Channel]:
    prefix = "tests.e2e.apps."
    grpc_cluster.client.deploy({
        "grpc_options": {"grpc_servicer_functions": [
            prefix + "streamer_pb2_grpc.add_StreamerServicer_to_server",
            prefix + "greeter_pb2_grpc.add_GreeterServicer_to_server"]},
        "applications": [
            {"name": "streamer", "import_path": prefix + "streaming_app:app",
             "route_prefix": None, "runtime_env": {"working_dir": str(ROOT)}},
            {"name": "greeter", "import_path": prefix + "grpc_app:app",
             "route_prefix": None, "runtime_env": {"working_dir": str(ROOT)}}],
    })
    grpc_cluster.wait_status("streamer", "RUNNING")
    grpc_cluster.wait_status("greeter", "RUNNING")
    with grpc.insecure_channel(grpc_cluster.info.grpc) as channel:
        yield channel


def test_unary_call_and_load_shedding(channel: grpc.Channel) -> None:
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


def test_four_kinds_routed_by_service_name(channel: grpc.Channel, tmp_path: Path) -> None:
    stub = streamer_pb2_grpc.StreamerStub(channel)
    # Two apps, no `application` key: each call goes to the app that serves its service.
    assert stub.Echo(Number(value=7), timeout=10).value == 7
    greeter = greeter_pb2_grpc.GreeterStub(channel)
    assert greeter.Greet(greeter_pb2.GreetRequest(name="w"), timeout=10).message == "Hello, w!"
    # Server streaming, each message as it is produced: the second is produced only once
    # the client has the first (a file the client makes), so a buffered stream never ends.
    go = tmp_path / "go"
    numbers = []
    for number in stub.Count(Number(value=4, text=str(go)), timeout=15):
        numbers.append(number.value)
        go.touch()
    assert numbers == [0, 1, 2, 3]
    # Client streaming.
    assert stub.Sum(iter([Number(value=v) for v in (1, 2, 3, 4)]), timeout=10).value == 10
    # Bidirectional, in step: each request is sent only after the previous answer came.
    outbox: queue.Queue[Number | None] = queue.Queue()
    outbox.put(Number(value=1, text="a"))
    answers = []
    for answer in stub.Chat(iter(outbox.get, None), timeout=10):
        answers.append((answer.value, answer.text))
        outbox.put(Number(value=answer.value + 1, text="b") if len(answers) < 3 else None)
    assert answers == [(2, "a"), (6, "b"), (14, "b")]


def test_context_status_and_request_id(channel: grpc.Channel) -> None:
    stub = streamer_pb2_grpc.StreamerStub(channel)
    reply, call = stub.Echo.with_call(Number(value=1), timeout=10,
                                      metadata=[("x-request-id", "req-42"), ("tag", "t1")])
    trailing = dict(call.trailing_metadata())
    assert reply.text == "req-42"  # the replica's request context has the client's id
    assert trailing["x-request-id"] == "req-42" and trailing["echoed"] == "t1"
    assert trailing["request_id"] == "req-42"  # Ray's key
    reply, call = stub.Echo.with_call(Number(value=1), timeout=10)
    made = dict(call.trailing_metadata())["x-request-id"]
    assert made and reply.text == made
    with pytest.raises(grpc.RpcError) as failed:
        stub.Echo(Number(text="fail"), timeout=10)
    assert failed.value.code() == grpc.StatusCode.UNKNOWN
    assert "boom" in failed.value.details()
    with pytest.raises(grpc.RpcError) as missing:
        stub.Echo(Number(text="missing"), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert missing.value.details() == "no such number"


def test_cancel_mid_stream_frees_the_replica(channel: grpc.Channel, tmp_path: Path) -> None:
    stub = streamer_pb2_grpc.StreamerStub(channel)
    go = tmp_path / "go"
    stream = stub.Count(Number(value=10**6, text=str(go)), timeout=30)
    go.touch()
    assert [next(stream).value for _ in range(3)] == [0, 1, 2]
    # The replica's one slot is taken: a streamed call is shed at once, not queued.
    with pytest.raises(grpc.RpcError) as shed:
        stub.Sum(iter([Number(value=1)]), timeout=10)
    assert shed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    stream.cancel()
    # The generator was closed on the replica, and its one slot is free again
    # (max_ongoing_requests=1, max_queued_requests=0: a busy replica sheds at once).
    wait_for(lambda: Path(str(go) + ".closed").exists(), 10, "the replica's stream to end")
    wait_for(lambda: _echo_ok(stub), 10, "the replica to take a call again")
    with pytest.raises(grpc.RpcError) as late:
        list(stub.Count(Number(value=10**6), timeout=0.5))
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def _echo_ok(stub: streamer_pb2_grpc.StreamerStub) -> bool:
    try:
        return stub.Echo(Number(value=3), timeout=5).value == 3
    except grpc.RpcError:
        return False


def test_reflection_and_health(grpc_cluster: RunningCluster, channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    services = database.get_services()
    assert SERVICE in services and "userdefined.Greeter" in services
    assert "grpc.health.v1.Health" in services
    # The stable v1 service (grpcurl's first choice) answers the same.
    v1 = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    [listed] = v1(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    assert SERVICE in {s.name for s in listed.list_services_response.service}
    with pytest.raises(grpc.RpcError) as nobody:
        channel.unary_unary("/nobody.Serves/This")(b"", timeout=5)
    assert nobody.value.code() == grpc.StatusCode.UNIMPLEMENTED
    service = descriptor_pool.DescriptorPool(database).FindServiceByName(SERVICE)
    kinds = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert kinds == {"Echo": (False, False), "Count": (False, True),
                     "Sum": (True, False), "Chat": (True, True)}
    health = health_pb2_grpc.HealthStub(channel)

    def status(name: str) -> int:
        return health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status

    serving = health_pb2.HealthCheckResponse.SERVING
    assert status("") == serving and status(SERVICE) == serving
    with grpc.insecure_channel(grpc_cluster.info.address) as controller:
        check = health_pb2_grpc.HealthStub(controller).Check
        assert check(health_pb2.HealthCheckRequest(service="weir.Controller"),
                     timeout=5).status == serving
    grpc_cluster.client.delete_apps(["streamer"])
    wait_for(lambda: status(SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING, 20,
             "the deleted app's service to be NOT_SERVING")
    assert status("userdefined.Greeter") == serving
    wait_for(lambda: SERVICE not in ProtoReflectionDescriptorDatabase(channel).get_services(),
             10, "reflection to forget the deleted app's service")
