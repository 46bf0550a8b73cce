"""The replica's side of gRPC calls: the status a call ends with, what a replica tells
the ingress of its services, and the four kinds against a real UserCallable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import cloudpickle
import grpc
from google.protobuf import descriptor_pb2

from weir.protos import weir_pb2 as pb
from weir.replica.grpc_calls import final_reply, streamed_replies, unary_reply
from weir.replica.grpc_codecs import method_codecs, service_catalog
from weir.replica.user_callable import UserCallable
from weir.serve.grpc_util import RayServegRPCContext

ADD = "tests.e2e.apps.streamer_pb2_grpc.add_StreamerServicer_to_server"
SERVICE = "/userdefined.Streamer/"


def test_final_reply_code_details_trailing() -> None:
    context = RayServegRPCContext()
    assert final_reply(context).grpc_code == 0
    failed = final_reply(context, ValueError("boom"))
    assert (failed.outcome, failed.grpc_code, failed.grpc_details) == (
        pb.USER_ERROR, grpc.StatusCode.UNKNOWN.value[0], "ValueError: boom")
    context.set_code(grpc.StatusCode.NOT_FOUND)
    context.set_details("gone")
    context.set_trailing_metadata([("k", "v"), ("k-bin", b"\x01")])
    reply = final_reply(context, ValueError("ignored details"))
    assert (reply.grpc_code, reply.grpc_details) == (5, "gone")
    assert [(h.name, h.value) for h in reply.grpc_trailing_metadata] == [
        (b"k", b"v"), (b"k-bin", b"\x01")]


def test_service_catalog_kinds_and_files() -> None:
    codecs = method_codecs([ADD, "tests.e2e.apps.greeter_pb2_grpc.add_GreeterServicer_to_server"])
    catalog = service_catalog(codecs, lambda name: name in ("Echo", "Chat"))
    assert list(catalog.services) == ["userdefined.Streamer"]  # Greet is not implemented
    kinds = {m.path: (m.client_streaming, m.server_streaming) for m in catalog.methods}
    assert kinds[SERVICE + "Count"] == (False, True) and kinds[SERVICE + "Sum"] == (True, False)
    names = [descriptor_pb2.FileDescriptorProto.FromString(f).name
             for f in catalog.file_descriptors]
    assert names == ["tests/e2e/apps/streamer.proto"]


def _user() -> UserCallable:
    from tests.e2e.apps.streaming_app import Streamer

    target = Streamer.func_or_class  # type: ignore[attr-defined]
    return UserCallable(cloudpickle.dumps((target, (), {})), max_threads=2)


def _request(method: str, payload: bytes = b"", more: bool = False) -> pb.CallRequest:
    return pb.CallRequest(request_id="r1", method=method, grpc=pb.GrpcRequest(
        method_path=SERVICE + method, payload=payload, more_messages=more,
        metadata=[pb.Header(name=b"tag", value=b"t")]))


def test_four_kinds_on_a_user_callable() -> None:
    from tests.e2e.apps.streamer_pb2 import Number

    async def parts(*values: int) -> AsyncIterator[pb.CallPart]:
        for value in values:
            yield pb.CallPart(body=pb.BodyChunk(data=Number(value=value).SerializeToString()))

    async def run() -> None:
        user = _user()
        await user.construct()
        codecs = method_codecs([ADD])
        reply = await unary_reply(user, codecs, _request("Echo", Number(value=4)
                                                         .SerializeToString()), lambda: 1)
        assert Number.FromString(reply.body).value == 4
        assert [(h.name, h.value) for h in reply.grpc_trailing_metadata] == [(b"echoed", b"t")]

        async def messages(request: pb.CallRequest, *values: int) -> list[int]:
            out = []
            async for r in streamed_replies(user, codecs, request, parts(*values), lambda: 1):
                assert r.more_body or r.grpc_code == 0, r
                if r.more_body:
                    out.append(Number.FromString(r.body).value)
            return out

        assert await messages(_request("Count", Number(value=3).SerializeToString())) == [
            0, 1, 2]
        assert await messages(_request("Sum", more=True), 1, 2, 3) == [6]
        assert await messages(_request("Chat", more=True), 1, 2) == [2, 4]
        missing = await unary_reply(user, codecs, pb.CallRequest(grpc=pb.GrpcRequest(
            method_path="/x.Y/Z")), lambda: 1)
        assert missing.grpc_code == grpc.StatusCode.UNIMPLEMENTED.value[0]
        user.shutdown()

    asyncio.run(run())


def test_replica_server_answers_health_checks() -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from weir.replica.server import ReplicaServer, start_server

    async def run() -> list[int]:
        replica = ReplicaServer(lambda: None)
        server, address = await start_server(replica, "127.0.0.1")
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = health_pb2_grpc.HealthStub(channel)

                async def statuses() -> list[int]:
                    return [(await stub.Check(health_pb2.HealthCheckRequest(service=name),
                                              timeout=5)).status
                            for name in ("", "weir.Replica")]

                serving = await statuses()
                assert replica.health is not None
                await replica.health.enter_graceful_shutdown()  # as a draining replica does
                return serving + await statuses()
        finally:
            await server.stop(0)

    serving, not_serving = (health_pb2.HealthCheckResponse.SERVING,
                            health_pb2.HealthCheckResponse.NOT_SERVING)
    assert asyncio.run(run()) == [serving, serving, not_serving, not_serving]
