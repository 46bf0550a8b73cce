"""The gRPC ingress's follower of the users' services: it keeps the catalog
(weir.proxy.grpc_catalog) in step with the route table, and health and reflection with it.

On every new route table it asks one replica of each app it does not know yet (or knew
from a replica that is gone) for its services; then it sets each service's health and
gives reflection the apps that are in the table. A replica that cannot answer is asked
again at the next table or call; meanwhile calls to its app still route by the
`application` key, as unknown methods (the bidirectional path, correct for every kind).
"""

from __future__ import annotations

import asyncio

import grpc
import structlog
from grpc_health.v1.health import aio as health_aio

from weir.dataplane.caller import DataPlane
from weir.dataplane.route_table import RouteTable
from weir.dataplane.transport import ReplicaUnreachable
from weir.grpc_health import NOT_SERVING, SERVING
from weir.protos import weir_pb2 as pb
from weir.proxy.grpc_catalog import AppServices, Catalog, apps_to_learn, service_health
from weir.proxy.grpc_reflection import CatalogReflection

log = structlog.get_logger("weir.proxy.grpc")

#: How long one replica may take to list its services.
ASK_TIMEOUT_S = 2.0
#: How often the follower looks for a new route table.
TABLE_CHECK_S = 0.1


class ServiceFollower:
    """Keeps the catalog, the health statuses and reflection in step with the table."""

    def __init__(self, plane: DataPlane, health: health_aio.HealthServicer,
                 reflection: CatalogReflection) -> None:
        self.plane = plane
        self.catalog: Catalog = {}
        self.health = health
        self.reflection = reflection
        self._lock = asyncio.Lock()
        self._health_sent: dict[str, bool] = {}
        self._reflected: Catalog = {}

    async def _ask(self, app: str, replica_id: str, address: str) -> None:
        try:
            stub = await self.plane.transport.stub(address)
            reply = await stub.GrpcServices(pb.GrpcServicesRequest(), timeout=ASK_TIMEOUT_S)
        except (ReplicaUnreachable, grpc.aio.AioRpcError) as exc:
            log.info("could not learn an app's gRPC services; will ask again", app=app,
                     replica_id=replica_id, error=str(exc))
            return
        self.catalog[app] = AppServices.from_reply(replica_id, reply)
        log.info("learned an app's gRPC services", app=app, services=list(reply.services))

    async def refresh(self) -> None:
        """Learn what the current table calls for, then set health and reflection."""
        table = self.plane.table
        if table is None:
            return
        async with self._lock:
            asks = apps_to_learn(table, self.catalog)
            await asyncio.gather(*(self._ask(*ask) for ask in asks))
            deployed = {app for (app, _) in table.deployments}
            reflected = {app: known for app, known in self.catalog.items() if app in deployed}
            if reflected != self._reflected:
                self.reflection.update(reflected[app] for app in sorted(reflected))
                self._reflected = reflected
            await self._set_health(table)

    async def _set_health(self, table: RouteTable) -> None:
        health = service_health(table, self.catalog)
        for service, serving in health.items():
            if self._health_sent.get(service) != serving:
                await self.health.set(service, SERVING if serving else NOT_SERVING)
                self._health_sent[service] = serving

    async def run(self) -> None:
        """Follow the route table until cancelled."""
        seen: RouteTable | None = None
        while True:
            table = self.plane.table
            if table is not None and table is not seen:
                seen = table
                try:
                    await self.refresh()
                except Exception:
                    log.error("following the gRPC services failed", exc_info=True)
            await asyncio.sleep(TABLE_CHECK_S)
