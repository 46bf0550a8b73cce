"""What the gRPC ingress knows of the users' services, and the decisions it takes on it.

The proxy never imports user code, so it learns each app's services from one of the app's
replicas (`Replica.GrpcServices`: service names, method kinds, proto files) and keeps them
here, per app, with the id of the replica that told it. Everything below is a pure
function of this catalog and the route table:

- which app a call goes to (`route_call`): the `application` metadata key first (Ray's),
  else the one app whose servicers register the call's service, else the only app;
- the kind of a method (`method_kind`), so unary calls take the fast multiplexed path;
- what to ask again (`apps_to_learn`): an app not known yet, or known from a replica that
  left the table (a new version may serve other services);
- the health of every service (`service_health`): SERVING while its app has a replica.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from weir.dataplane.route_table import RouteTable
from weir.protos import weir_pb2 as pb

#: Ray's metadata key naming the application a call is for.
APPLICATION_KEY = "application"


@dataclass(frozen=True)
class MethodKind:
    """Whether a method's requests and responses stream."""

    client_streaming: bool
    server_streaming: bool

    @property
    def unary(self) -> bool:
        """One message each way."""
        return not self.client_streaming and not self.server_streaming


@dataclass(frozen=True)
class AppServices:
    """One app's gRPC services, as a replica of its ingress reported them."""

    replica_id: str
    services: tuple[str, ...] = ()
    methods: dict[str, MethodKind] = field(default_factory=dict)
    #: Serialized FileDescriptorProtos, each after the files it imports.
    file_descriptors: tuple[bytes, ...] = ()

    @classmethod
    def from_reply(cls, replica_id: str, reply: pb.GrpcServicesReply) -> AppServices:
        """From a replica's answer to GrpcServices."""
        return cls(replica_id=replica_id, services=tuple(reply.services),
                   methods={m.path: MethodKind(m.client_streaming, m.server_streaming)
                            for m in reply.methods},
                   file_descriptors=tuple(reply.file_descriptors))


#: App name -> its services.
Catalog = dict[str, AppServices]


def ingress_of(table: RouteTable, app: str) -> str | None:
    """The deployment that takes the app's calls: its routed ingress, else (an app with no
    HTTP route) the first of its deployments the table lists."""
    for route in table.routes:
        if route.app == app:
            return route.deployment
    for (name, deployment) in table.deployments:
        if name == app:
            return deployment
    return None


def service_of(method_path: str) -> str:
    """"package.Service" of "/package.Service/Method"."""
    return method_path.lstrip("/").split("/", 1)[0]


def route_call(table: RouteTable, catalog: Catalog, method_path: str,
               application: str | None) -> tuple[str, str] | None:
    """(app, ingress deployment) for a call, or None if no app matches."""
    apps = {app for (app, _) in table.deployments}
    if application:
        wanted: str | None = application
    else:
        service = service_of(method_path)
        serving = sorted(app for app, known in catalog.items()
                         if app in apps and service in known.services)
        if serving:
            wanted = serving[0]
        elif len(apps) == 1:
            wanted = next(iter(apps))
        else:
            wanted = None
    if wanted is None:
        return None
    deployment = ingress_of(table, wanted)
    return (wanted, deployment) if deployment else None


def method_kind(catalog: Catalog, app: str, method_path: str) -> MethodKind | None:
    """The method's kind if the app's services are known, else None."""
    known = catalog.get(app)
    return None if known is None else known.methods.get(method_path)


def apps_to_learn(table: RouteTable, catalog: Catalog) -> list[tuple[str, str, str]]:
    """(app, replica_id, address) to ask for its services: each app whose services are not
    known, or were told by a replica no longer in the table, and that has a replica now."""
    asks = []
    for (app, deployment), targets in sorted(table.deployments.items()):
        if deployment != ingress_of(table, app) or not targets.replicas:
            continue
        known = catalog.get(app)
        current = {r.replica_id for r in targets.replicas}
        if known is None or known.replica_id not in current:
            first = targets.replicas[0]
            asks.append((app, first.replica_id, first.address))
    return asks


def service_health(table: RouteTable, catalog: Catalog) -> dict[str, bool]:
    """Every service known, and every app name, -> True (SERVING) while an app serving it
    has a replica in the table. A deleted app's services stay known, as NOT_SERVING."""
    running = {app for (app, deployment), targets in table.deployments.items()
               if targets.replicas and deployment == ingress_of(table, app)}
    health: dict[str, bool] = {}
    for app, known in catalog.items():
        for service in (*known.services, app):
            health[service] = health.get(service, False) or app in running
    return health
