"""The names of Ray Serve's statuses: applications', deployments' (with the trigger that
explains one) and proxies'. One home for these wire strings: the controller's status
machine (`weir.controller.deployment_status`, `weir.controller.status`) writes them, and
`weir.serve.schema` hands them to users. `str` enums, as in Ray, so `status == "RUNNING"`
holds and JSON carries the plain name.
"""

from __future__ import annotations

from enum import Enum


class _StatusEnum(str, Enum):
    """A `str` enum that prints as its value (`print(status)` shows RUNNING)."""

    def __str__(self) -> str:
        return str(self.value)


class ApplicationStatus(_StatusEnum):
    """An application's status (Ray's meanings; `weir.controller.status`)."""

    NOT_STARTED = "NOT_STARTED"
    DEPLOYING = "DEPLOYING"
    DEPLOY_FAILED = "DEPLOY_FAILED"
    RUNNING = "RUNNING"
    UNHEALTHY = "UNHEALTHY"
    DELETING = "DELETING"


class DeploymentStatus(_StatusEnum):
    """A deployment's status (`weir.controller.deployment_status`)."""

    UPDATING = "UPDATING"
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    DEPLOY_FAILED = "DEPLOY_FAILED"
    UPSCALING = "UPSCALING"
    DOWNSCALING = "DOWNSCALING"


class DeploymentStatusTrigger(_StatusEnum):
    """How a deployment reached its status."""

    UNSPECIFIED = "UNSPECIFIED"
    CONFIG_UPDATE_STARTED = "CONFIG_UPDATE_STARTED"
    CONFIG_UPDATE_COMPLETED = "CONFIG_UPDATE_COMPLETED"
    UPSCALE_COMPLETED = "UPSCALE_COMPLETED"
    DOWNSCALE_COMPLETED = "DOWNSCALE_COMPLETED"
    AUTOSCALING = "AUTOSCALING"
    REPLICA_STARTUP_FAILED = "REPLICA_STARTUP_FAILED"
    HEALTH_CHECK_FAILED = "HEALTH_CHECK_FAILED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    DELETING = "DELETING"


class ProxyStatus(_StatusEnum):
    """A proxy's status. Weir lists a proxy while its presence lease lives: HEALTHY."""

    STARTING = "STARTING"
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    DRAINING = "DRAINING"
    DRAINED = "DRAINED"
