"""`weir.serve.schema`: Ray's `ray.serve.schema` module path, for the config file's models
(`ServeDeploySchema`, `ServeApplicationSchema`, `DeploymentSchema`, ...)."""

from weir.config.schema import (
    DeploymentSchema,
    GrpcOptionsSchema,
    HTTPOptionsSchema,
    RuntimeEnvSchema,
    ServeApplicationSchema,
    ServeDeploySchema,
)
from weir.runtime_context import ReplicaRank

#: Ray's spelling of the gRPC options' model.
gRPCOptionsSchema = GrpcOptionsSchema

__all__ = [
    "DeploymentSchema",
    "GrpcOptionsSchema",
    "HTTPOptionsSchema",
    "ReplicaRank",
    "RuntimeEnvSchema",
    "ServeApplicationSchema",
    "ServeDeploySchema",
    "gRPCOptionsSchema",
]
