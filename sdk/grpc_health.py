"""The standard gRPC health service (`grpc.health.v1.Health`) on Weir's gRPC servers, so
that load balancers, Kubernetes' gRPC probes and grpc-health-probe can ask any of them.

Controllers and replicas answer SERVING for as long as their server runs (the overall
service "" and their own service's name); the proxy's ingress keeps one status per user
service, from the route table (weir.proxy.grpc_catalog).
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: The health service's own name, as clients and reflection know it.
HEALTH_SERVICE = "grpc.health.v1.Health"


async def serve_health(server: grpc.aio.Server,
                       services: Iterable[str] = ()) -> health_aio.HealthServicer:
    """Add the health service to `server` (before it starts), SERVING overall and for
    `services`; returns it, to change a status later (`await health.set(name, status)`)."""
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", *services):
        await health.set(name, SERVING)
    return health
