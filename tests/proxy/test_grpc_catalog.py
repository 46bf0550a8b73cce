"""The gRPC ingress's decisions over its catalog and the route table: routing, kinds,
what to learn, health; and the status a call ends with. No network."""

from __future__ import annotations

import grpc

from weir.dataplane.route_table import RouteEntry, RouteTable
from weir.protos import weir_pb2 as pb
from weir.proxy.grpc_catalog import (
    AppServices,
    MethodKind,
    apps_to_learn,
    method_kind,
    route_call,
    service_health,
)
from weir.proxy.grpc_ingress import call_status, request_id_of
from weir.proxy.grpc_reflection import OWN_SERVICES, build_pool


def _table(**apps: list[str]) -> RouteTable:
    """Apps -> replica ids of their one deployment, "Ingress"."""
    return RouteTable(deployments={
        (app, "Ingress"): pb.DeploymentTargets(app=app, deployment="Ingress", replicas=[
            pb.ReplicaTarget(replica_id=r, address=f"127.0.0.1:{i + 1000}")
            for i, r in enumerate(replicas)])
        for app, replicas in apps.items()})


def _services(replica_id: str, *services: str) -> AppServices:
    return AppServices(replica_id=replica_id, services=services, methods={
        f"/{s}/Call": MethodKind(False, False) for s in services})


def test_route_by_application_key_then_service_then_only_app() -> None:
    table = _table(a=["a1"], b=["b1"])
    catalog = {"a": _services("a1", "pkg.A"), "b": _services("b1", "pkg.B")}
    assert route_call(table, catalog, "/pkg.B/Call", "a") == ("a", "Ingress")
    assert route_call(table, catalog, "/pkg.B/Call", None) == ("b", "Ingress")
    assert route_call(table, catalog, "/pkg.C/Call", None) is None
    assert route_call(table, catalog, "/pkg.B/Call", "nope") is None
    assert route_call(_table(a=["a1"]), {}, "/pkg.C/Call", None) == ("a", "Ingress")


def test_routed_ingress_wins_over_the_first_deployment() -> None:
    table = _table(a=["a1"])
    table.deployments[("a", "Model")] = pb.DeploymentTargets(app="a", deployment="Model")
    table.routes = [RouteEntry("/a", "a", "Model")]
    assert route_call(table, {}, "/pkg.A/Call", "a") == ("a", "Model")


def test_deleted_app_is_not_routed_by_service() -> None:
    catalog = {"a": _services("a1", "pkg.A"), "b": _services("b1", "pkg.A")}
    assert route_call(_table(b=["b1"], c=["c1"]), catalog, "/pkg.A/Call", None) == (
        "b", "Ingress")


def test_method_kind_known_or_not() -> None:
    catalog = {"a": AppServices("a1", ("pkg.A",), {"/pkg.A/Chat": MethodKind(True, True)})}
    assert method_kind(catalog, "a", "/pkg.A/Chat") == MethodKind(True, True)
    assert method_kind(catalog, "a", "/pkg.A/Other") is None
    assert method_kind(catalog, "b", "/pkg.A/Chat") is None
    assert MethodKind(False, False).unary and not MethodKind(False, True).unary


def test_apps_to_learn_unknown_or_told_by_a_replica_gone() -> None:
    table = _table(a=["a2"], b=["b1"], c=[])
    catalog = {"a": _services("a1"), "b": _services("b1")}
    assert apps_to_learn(table, catalog) == [("a", "a2", "127.0.0.1:1000")]
    assert apps_to_learn(table, {}) == [("a", "a2", "127.0.0.1:1000"),
                                        ("b", "b1", "127.0.0.1:1000")]


def test_service_health_follows_running_replicas() -> None:
    catalog = {"a": _services("a1", "pkg.A", "pkg.S"), "b": _services("b1", "pkg.S")}
    assert service_health(_table(a=["a1"], b=["b1"]), catalog) == {
        "pkg.A": True, "pkg.S": True, "a": True, "b": True}
    # App a deleted: its services stay known, NOT_SERVING unless another app serves them.
    assert service_health(_table(b=["b1"]), catalog) == {
        "pkg.A": False, "pkg.S": True, "a": False, "b": True}
    assert service_health(_table(a=[], b=["b1"]), catalog)["pkg.A"] is False


def test_call_status_from_the_last_reply() -> None:
    trailing = [pb.Header(name=b"k", value=b"v"), pb.Header(name=b"k-bin", value=b"\x00")]
    assert call_status(pb.CallReply(grpc_trailing_metadata=trailing)) == (
        grpc.StatusCode.OK, "", [("k", "v"), ("k-bin", b"\x00")])
    assert call_status(pb.CallReply(outcome=pb.USER_ERROR, error="boom",
                                    error_type="ValueError"))[:2] == (
        grpc.StatusCode.UNKNOWN, "ValueError: boom")
    assert call_status(pb.CallReply(outcome=pb.USER_ERROR, grpc_code=5,
                                    grpc_details="gone"))[:2] == (
        grpc.StatusCode.NOT_FOUND, "gone")
    assert call_status(pb.CallReply(outcome=pb.TIMEOUT))[0] == (
        grpc.StatusCode.DEADLINE_EXCEEDED)


def test_request_id_kept_or_made() -> None:
    assert request_id_of([("x-request-id", "abc")]) == "abc"
    assert request_id_of([("request_id", "ray")]) == "ray"
    made = request_id_of([("other", "x")])
    assert len(made) == 32 and made != request_id_of([])


def test_reflection_pool_from_reported_files() -> None:
    from tests.e2e.apps import streamer_pb2

    files = (streamer_pb2.DESCRIPTOR.serialized_pb,)
    app = AppServices("a1", ("userdefined.Streamer",), file_descriptors=files)
    pool, names = build_pool([app, app])  # the same file twice is one file
    assert names == sorted([*OWN_SERVICES, "userdefined.Streamer"])
    methods = pool.FindServiceByName("userdefined.Streamer").methods_by_name
    assert methods["Chat"].client_streaming and methods["Chat"].server_streaming
    # A service whose file did not come is left out of the list, not described wrongly.
    _, names = build_pool([AppServices("b1", ("pkg.Unknown",))])
    assert names == sorted(OWN_SERVICES)


def test_client_messages_follow_the_call_only_when_taken() -> None:
    import asyncio
    from collections.abc import AsyncIterator

    from weir.proxy.grpc_ingress import ClientMessages

    read: list[bytes] = []

    async def client() -> AsyncIterator[bytes]:
        for message in (b"a", b"b"):
            read.append(message)
            yield message

    async def run() -> list[tuple[bytes, bool]]:
        request = pb.GrpcRequest()
        body = ClientMessages(request, client())
        assert body.seal() and request.more_messages and not read and not body.started
        taken = [chunk async for chunk in body.rest()]
        assert body.started
        unary = pb.GrpcRequest(payload=b"x")
        assert ClientMessages(unary, None).seal() and not unary.more_messages
        return taken

    assert asyncio.run(run()) == [(b"a", False), (b"b", False)]
    assert read == [b"a", b"b"]
