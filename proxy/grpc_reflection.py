"""Server reflection on the gRPC ingress, from the proto files the users' replicas report.

`grpcurl -plaintext HOST:PORT list` and `describe` ask the standard reflection service;
it answers from a descriptor pool. The proxy never imports user code, so its pool is built
from the serialized FileDescriptorProtos in the catalog (weir.proxy.grpc_catalog) and built
again, whole, whenever the catalog changes: a pool cannot forget a file, and a new version
of an app may change one. Two apps that ship different files under one name cannot both
be described; the second is left out of the pool, with a warning.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

import grpc
import structlog
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from weir.grpc_health import HEALTH_SERVICE
from weir.proxy.grpc_catalog import AppServices

log = structlog.get_logger("weir.proxy.grpc")

#: The ingress's own services, listed beside the users'.
OWN_SERVICES = (HEALTH_SERVICE, reflection.SERVICE_NAME)
_OWN_FILES = (health_pb2.DESCRIPTOR.serialized_pb, reflection_pb2.DESCRIPTOR.serialized_pb)


def build_pool(apps: Iterable[AppServices]) -> tuple[descriptor_pool.DescriptorPool, list[str]]:
    """A descriptor pool of the apps' proto files and the ingress's own, and the service
    names to list: those whose files made it into the pool."""
    pool = descriptor_pool.DescriptorPool()
    added: dict[str, bytes] = {}
    services = set(OWN_SERVICES)
    for app in [AppServices(replica_id="", file_descriptors=_OWN_FILES), *apps]:
        for serialized in app.file_descriptors:
            name = descriptor_pb2.FileDescriptorProto.FromString(serialized).name
            if added.get(name, serialized) != serialized:
                log.warning("two applications ship different proto files of one name; "
                            "reflection describes the first", file=name)
                continue
            if name not in added:
                try:
                    pool.AddSerializedFile(serialized)
                except Exception as exc:  # a file whose imports were left out
                    log.warning("proto file not reflected", file=name, error=str(exc))
                    continue
                added[name] = serialized
        for service in app.services:
            try:
                pool.FindServiceByName(service)
            except KeyError:
                continue
            services.add(service)
    return pool, sorted(services)


#: The stable reflection service, which grpcurl asks first; its messages are v1alpha's
#: under another package name, so one servicer answers both.
V1_SERVICE = "grpc.reflection.v1.ServerReflection"


def add_reflection(servicer: CatalogReflection, server: grpc.aio.Server) -> None:
    """Serve `servicer` as both reflection services, v1alpha and v1, on `server`."""
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    server.add_registered_method_handlers(V1_SERVICE, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString),
    })


class CatalogReflection(reflection_pb2_grpc.ServerReflectionServicer):
    """The reflection service over the current catalog; `update` swaps it whole, and
    calls already open finish on the one they began with."""

    def __init__(self) -> None:
        self.update([])

    def update(self, apps: Iterable[AppServices]) -> None:
        """Describe these apps' services from now on."""
        pool, names = build_pool(apps)
        self.services = names
        self._current = reflection.aio.ReflectionServicer(names, pool=pool)

    async def ServerReflectionInfo(
            self, request_iterator: AsyncIterable[reflection_pb2.ServerReflectionRequest],
            context: Any) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        """Answer reflection requests from the pool as it is when the call starts."""
        async for response in self._current.ServerReflectionInfo(request_iterator, context):
            yield response
