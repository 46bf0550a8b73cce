"""A deployment's status as Ray Serve reports it: a state machine over events of each pass.

Design. Ray's `serve status` says more than "healthy or not": each deployment is UPDATING,
HEALTHY, UNHEALTHY, DEPLOY_FAILED, UPSCALING or DOWNSCALING, with a `status_trigger` saying
how it got there (CONFIG_UPDATE_COMPLETED, UPSCALE_COMPLETED, REPLICA_STARTUP_FAILED...).
The trigger depends on where the deployment came from, so the status is a state machine,
not a function of this moment alone: `transition` is its table (Ray's meanings), and
`advance` turns one reconcile pass's facts (the target, the replicas, the health
judgement) into the events that drive it. Both are pure; the leader keeps the last
`StatusInfo` of each deployment for its term only. A new leader starts each deployment at
UPDATING and the first pass that finds it complete makes it HEALTHY, so a failover changes
no status a user waits for.

What guards against flapping to DEPLOY_FAILED: a replica that fails to start counts
against the threshold (Ray: three failures per target replica, at most
`max_constructor_retry_count`) only while the deployment is updating; one that fails later
(its health check, or its process dying) makes a deployment that was healthy UNHEALTHY
until enough replicas run again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from weir.controller.health import DeploymentHealth
from weir.controller.reconciler import DeploymentTarget, ReplicaView
from weir.statuses import DeploymentStatus as S
from weir.statuses import DeploymentStatusTrigger as T

# Events of a pass (Ray's internal triggers).
EV_HEALTHY = "HEALTHY"
EV_CONFIG_UPDATE = "CONFIG_UPDATE"
EV_AUTOSCALE_UP = "AUTOSCALE_UP"
EV_AUTOSCALE_DOWN = "AUTOSCALE_DOWN"
EV_MANUAL_UP = "MANUALLY_INCREASE_NUM_REPLICAS"
EV_MANUAL_DOWN = "MANUALLY_DECREASE_NUM_REPLICAS"
EV_STARTUP_FAILED = "REPLICA_STARTUP_FAILED"
EV_HEALTH_CHECK_FAILED = "HEALTH_CHECK_FAILED"
EV_INTERNAL_ERROR = "INTERNAL_ERROR"
EV_DELETE = "DELETE"

#: Failed starts per target replica before an update is DEPLOY_FAILED (Ray's figure).
STARTUP_FAILURES_PER_REPLICA = 3
#: Ray's default `max_constructor_retry_count`, the threshold's ceiling.
MAX_CONSTRUCTOR_RETRY_COUNT = 20

_SCALING = frozenset({S.UPSCALING, S.DOWNSCALING})
_FAILED = frozenset({S.UNHEALTHY, S.DEPLOY_FAILED})


@dataclass(frozen=True)
class StatusInfo:
    """One deployment's status, and the goal it was judged against."""

    status: str = S.UPDATING
    status_trigger: str = T.CONFIG_UPDATE_STARTED
    message: str = ""
    #: The target version and replica count of the last pass (a change is an event).
    version: str = ""
    num_replicas: int = 0


def transition(info: StatusInfo, event: str, message: str = "") -> StatusInfo:
    """The status after `event` (Ray's table; an event a state does not expect is ignored).

    The message is replaced by the event's, as in Ray, except for an ignored event."""
    status, trigger = info.status, info.status_trigger
    new: tuple[str, str] | None = None
    if event == EV_INTERNAL_ERROR:
        new = (S.UNHEALTHY, T.INTERNAL_ERROR)
    elif event == EV_DELETE:
        new = (S.UPDATING, T.DELETING)
    elif event == EV_CONFIG_UPDATE:
        new = (S.UPDATING, T.CONFIG_UPDATE_STARTED)
    elif status == S.UPDATING:
        new = {EV_HEALTHY: (S.HEALTHY, T.CONFIG_UPDATE_COMPLETED),
               EV_AUTOSCALE_UP: (S.UPSCALING, T.AUTOSCALING),
               EV_AUTOSCALE_DOWN: (S.DOWNSCALING, T.AUTOSCALING),
               # Failures while updating mean the update failed.
               EV_HEALTH_CHECK_FAILED: (S.DEPLOY_FAILED, T.HEALTH_CHECK_FAILED),
               EV_STARTUP_FAILED: (S.DEPLOY_FAILED, T.REPLICA_STARTUP_FAILED)}.get(event)
    elif status in _SCALING:
        if event == EV_HEALTHY:
            new = (S.HEALTHY, (T.UPSCALE_COMPLETED if status == S.UPSCALING
                               else T.DOWNSCALE_COMPLETED))
        elif event in (EV_HEALTH_CHECK_FAILED, EV_STARTUP_FAILED):
            new = (S.UNHEALTHY, T(event))
        elif event in (EV_AUTOSCALE_UP, EV_MANUAL_UP, EV_AUTOSCALE_DOWN, EV_MANUAL_DOWN):
            up = event in (EV_AUTOSCALE_UP, EV_MANUAL_UP)
            manual = event in (EV_MANUAL_UP, EV_MANUAL_DOWN)
            # A manual change during autoscaling is a config update; any change during a
            # config update stays one.
            new = (S.UPSCALING if up else S.DOWNSCALING,
                   T.CONFIG_UPDATE_STARTED if manual else trigger)
    elif status == S.HEALTHY:
        new = {EV_MANUAL_UP: (S.UPSCALING, T.CONFIG_UPDATE_STARTED),
               EV_MANUAL_DOWN: (S.DOWNSCALING, T.CONFIG_UPDATE_STARTED),
               EV_AUTOSCALE_UP: (S.UPSCALING, T.AUTOSCALING),
               EV_AUTOSCALE_DOWN: (S.DOWNSCALING, T.AUTOSCALING),
               EV_HEALTH_CHECK_FAILED: (S.UNHEALTHY, T.HEALTH_CHECK_FAILED)}.get(event)
    elif status in _FAILED:
        if event == EV_HEALTHY:
            new = (S.HEALTHY, T.UNSPECIFIED)
        elif event in (EV_HEALTH_CHECK_FAILED, EV_STARTUP_FAILED):
            # A failed deploy stays failed; a failure after running stays unhealthy.
            new = (status, T(event))
    if new is None:
        return info
    return replace(info, status=new[0], status_trigger=new[1], message=message)


def startup_failure_threshold(num_replicas: int) -> int:
    """Failed starts after which an update is DEPLOY_FAILED."""
    return min(STARTUP_FAILURES_PER_REPLICA * max(1, num_replicas), MAX_CONSTRUCTOR_RETRY_COUNT)


def advance(
    previous: StatusInfo | None,
    target: DeploymentTarget,
    replicas: Iterable[ReplicaView],
    health: DeploymentHealth,
    *,
    autoscaled: bool = False,
) -> StatusInfo:
    """The status after one pass that found `replicas` and judged `health`.

    `autoscaled`: the deployment's replica count is the autoscaler's, so a change of it is
    AUTOSCALE_UP/DOWN rather than a manual one."""
    info = previous or StatusInfo(version=target.version, num_replicas=target.num_replicas)
    if info.version != target.version:
        info = transition(info, EV_CONFIG_UPDATE)
    elif info.num_replicas != target.num_replicas:
        up = target.num_replicas > info.num_replicas
        event = ((EV_AUTOSCALE_UP if up else EV_AUTOSCALE_DOWN) if autoscaled
                 else (EV_MANUAL_UP if up else EV_MANUAL_DOWN))
        info = transition(info, event)
    info = replace(info, version=target.version, num_replicas=target.num_replicas)
    live = [r for r in replicas if not r.stopping and r.state not in ("DEAD", "FAILED")]
    running = sum(1 for r in live if r.version == target.version and r.state == "RUNNING")
    old = any(r.version != target.version for r in live)
    if health.new_failure == "health":
        info = transition(info, EV_HEALTH_CHECK_FAILED, health.message)
    elif health.new_failure == "startup" and (
            info.status != S.UPDATING
            or health.consecutive_failures >= startup_failure_threshold(target.num_replicas)):
        info = transition(info, EV_STARTUP_FAILED, health.message)
    if running >= target.num_replicas and not old:
        return transition(info, EV_HEALTHY)
    if info.status == S.HEALTHY:
        # It reached this goal and lost replicas without a failure seen (a record gone):
        # a crash, not an update.
        info = transition(info, EV_HEALTH_CHECK_FAILED, health.message or (
            f"{running} of {target.num_replicas} replicas running; replacing the others"))
    if info.status in _FAILED:
        return info if info.message else replace(info, message=health.message)
    return replace(info, message=_progress(info, running, target.num_replicas, health))


def _progress(info: StatusInfo, running: int, wanted: int, health: DeploymentHealth) -> str:
    """Why a deployment on its way is not there yet."""
    if health.waiting:
        return health.waiting
    if health.message:
        # Failures below the DEPLOY_FAILED threshold: say why it is taking long.
        return health.message
    if info.status in _SCALING:
        verb = "Upscaling" if info.status == S.UPSCALING else "Downscaling"
        return f"{verb} from {running} to {wanted} replicas"
    return f"{running} of {wanted} replicas of the new version running"


def deleting(previous: StatusInfo | None) -> StatusInfo:
    """The status of a deployment of an application being deleted."""
    return transition(previous or StatusInfo(), EV_DELETE, "deleting")
