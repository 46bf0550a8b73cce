"""`weir.serve.schema`: Ray's `ray.serve.schema` module path, for the config file's models
(`ServeDeploySchema`, `ServeApplicationSchema`, `DeploymentSchema`, ...) and the status
objects `serve.status()` returns (`ServeStatus`, `ApplicationStatusOverview`,
`DeploymentStatusOverview` and their enums, which are `str` enums as in Ray, so
`status == "RUNNING"` holds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from weir.config.schema import (
    DeploymentSchema,
    GrpcOptionsSchema,
    HTTPOptionsSchema,
    RuntimeEnvSchema,
    ServeApplicationSchema,
    ServeDeploySchema,
)
from weir.runtime_context import ReplicaRank
from weir.statuses import (
    ApplicationStatus,
    DeploymentStatus,
    DeploymentStatusTrigger,
    ProxyStatus,
)

#: Ray's spelling of the gRPC options' model.
gRPCOptionsSchema = GrpcOptionsSchema


@dataclass
class DeploymentStatusOverview:
    """One deployment's status, as Ray's (plus its `name`)."""

    status: DeploymentStatus
    status_trigger: DeploymentStatusTrigger
    replica_states: dict[str, int]
    message: str
    name: str = ""


@dataclass
class ApplicationStatusOverview:
    """One application's status and its deployments'."""

    status: ApplicationStatus
    message: str
    last_deployed_time_s: float
    deployments: dict[str, DeploymentStatusOverview] = field(default_factory=dict)

    @property
    def deployment_timestamp(self) -> float:
        """`last_deployed_time_s` under the name `serve status` prints."""
        return self.last_deployed_time_s


@dataclass
class ServeStatus:
    """What `serve.status()` returns: Ray's fields, then Weir's (controllers, nodes)."""

    #: Each proxy's id -> its status.
    proxies: dict[str, ProxyStatus] = field(default_factory=dict)
    applications: dict[str, ApplicationStatusOverview] = field(default_factory=dict)
    target_capacity: float | None = None
    controllers: list[dict[str, Any]] = field(default_factory=list)
    #: Each node: id, address, state (ALIVE or DEAD), resources offered and used, replicas.
    nodes: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> ServeStatus:
        """Read the status document of `weir status` (the admin API's GetStatus)."""
        out = cls(proxies={p.get("id", str(i)): ProxyStatus.HEALTHY
                           for i, p in enumerate(doc.get("proxies", []))},
                  controllers=doc.get("controllers", []), nodes=doc.get("nodes", []))
        for name, app in doc.get("applications", {}).items():
            a = app["app_status"]
            out.applications[name] = ApplicationStatusOverview(
                ApplicationStatus(a["status"]), a["message"], a["deployment_timestamp"],
                {d["name"]: DeploymentStatusOverview(
                    DeploymentStatus(d["status"]),
                    DeploymentStatusTrigger(d.get("status_trigger", "UNSPECIFIED")),
                    d.get("replica_states", {}), d["message"], d["name"])
                 for d in app["deployment_statuses"]})
        return out


__all__ = [
    "ApplicationStatus",
    "ApplicationStatusOverview",
    "DeploymentSchema",
    "DeploymentStatus",
    "DeploymentStatusOverview",
    "DeploymentStatusTrigger",
    "GrpcOptionsSchema",
    "HTTPOptionsSchema",
    "ProxyStatus",
    "ReplicaRank",
    "RuntimeEnvSchema",
    "ServeApplicationSchema",
    "ServeDeploySchema",
    "ServeStatus",
    "gRPCOptionsSchema",
]
