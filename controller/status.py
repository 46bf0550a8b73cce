"""Status roll-up: replica states and failures into deployment and application statuses,
with the meanings of Ray Serve's `serve status` (seed 001).

Application: NOT_STARTED, DEPLOYING, RUNNING, DEPLOY_FAILED (the latest deploy failed).
Deployment: UPDATING, HEALTHY, UNHEALTHY (failed to update, or became unhealthy after),
UPSCALING and DOWNSCALING (a version that was healthy changes only its replica count, by
the autoscaler or by num_replicas; the application stays RUNNING meanwhile, as in Ray).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from weir.controller.health import DeploymentHealth
from weir.controller.reconciler import DeploymentTarget, ReplicaView


@dataclass
class AppView:
    """The parts of an application's goal the roll-up needs."""

    name: str
    deployment_timestamp: float
    built: bool
    build_error: str = ""
    deployments: list[str] = field(default_factory=list)
    ingress: str = ""
    route_prefix: str | None = "/"


def deployment_status(
    target: DeploymentTarget | None,
    replicas: Iterable[ReplicaView],
    health: DeploymentHealth,
) -> tuple[str, str, dict[str, int]]:
    """(status, message, replica counts by state) of one deployment."""
    group = list(replicas)
    counts = dict(Counter("STOPPING" if r.stopping else r.state for r in group))
    if target is None:
        return "UPDATING", "waiting for the application to build", counts
    live = [r for r in group if not r.stopping and r.state != "DEAD"]
    running_new = sum(1 for r in live if r.version == target.version and r.state == "RUNNING")
    old = [r for r in live if r.version != target.version]
    if running_new == target.num_replicas and not old:
        return "HEALTHY", "", counts
    if health.message:
        return "UNHEALTHY", health.message, counts
    if health.waiting:
        return "UPDATING", health.waiting, counts
    if (health.healthy_version, health.healthy_replicas) == (target.version,
                                                            target.num_replicas) and not old:
        # It reached this very goal before and lost replicas since: not an update.
        return "UNHEALTHY", (f"{running_new} of {target.num_replicas} replicas running; "
                             "replacing the others"), counts
    if health.healthy_version == target.version and not old:
        # The same version, only more or fewer replicas: it keeps serving as it scales.
        up = running_new < target.num_replicas
        return ("UPSCALING" if up else "DOWNSCALING",
                f"{'Upscaling' if up else 'Downscaling'} from {running_new} to "
                f"{target.num_replicas} replicas", counts)
    return "UPDATING", (f"{running_new} of {target.num_replicas} replicas of the new version "
                        f"running"), counts


def application_status(
    app: AppView,
    deployments: Mapping[str, tuple[str, str]],
    *,
    ever_running: bool,
) -> tuple[str, str]:
    """(status, message) of an application from its deployments' (status, message)."""
    if app.build_error:
        return "DEPLOY_FAILED", app.build_error
    if not app.built:
        return "DEPLOYING", "building the application (importing its code)"
    unhealthy = {n: m for n, (s, m) in deployments.items() if s == "UNHEALTHY"}
    if unhealthy:
        name, message = next(iter(sorted(unhealthy.items())))
        if not ever_running:
            return "DEPLOY_FAILED", f"deployment {name!r} failed to deploy: {message}"
        return "RUNNING", f"deployment {name!r} is unhealthy: {message}"
    if any(s == "UPDATING" for s, _ in deployments.values()):
        return "DEPLOYING", ""
    return "RUNNING", ""


def status_document(
    apps: Iterable[AppView],
    targets: Mapping[tuple[str, str], DeploymentTarget],
    replicas: Iterable[ReplicaView],
    health: Mapping[tuple[str, str], DeploymentHealth],
    ever_running: Mapping[str, bool],
    autoscaling: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, bool]]:
    """The `applications:` part of `weir status`, and which apps are RUNNING now.

    `autoscaling`: what to show of each autoscaled deployment's decision (its target...)."""
    by_key: dict[tuple[str, str], list[ReplicaView]] = {}
    for r in replicas:
        by_key.setdefault((r.app, r.deployment), []).append(r)
    doc: dict[str, Any] = {}
    running: dict[str, bool] = {}
    for app in apps:
        dep_status: dict[str, tuple[str, str]] = {}
        dep_docs = []
        for name in app.deployments:
            key = (app.name, name)
            status, message, counts = deployment_status(
                targets.get(key), by_key.get(key, []), health.get(key, DeploymentHealth()))
            dep_status[name] = (status, message)
            dep_docs.append({"name": name, "status": status, "message": message,
                             "replica_states": counts})
            if autoscaling and key in autoscaling:
                dep_docs[-1]["autoscaling"] = dict(autoscaling[key])
        status, message = application_status(app, dep_status,
                                             ever_running=ever_running.get(app.name, False))
        running[app.name] = status == "RUNNING" and not message
        doc[app.name] = {
            "app_status": {"status": status, "message": message,
                           "deployment_timestamp": app.deployment_timestamp},
            "route_prefix": app.route_prefix,
            "deployment_statuses": dep_docs,
        }
    return doc, running


def update_ever_running(previous: Mapping[str, float], deployed_at: Mapping[str, float],
                        running: Mapping[str, bool]) -> dict[str, float]:
    """Which apps have been RUNNING since their last deploy: app -> that deploy's timestamp.

    An app that has run at its current deploy and fails later is RUNNING with an unhealthy
    deployment; one that never ran since its deploy is DEPLOY_FAILED. Apps deleted or
    redeployed since drop out.
    """
    out = {n: ts for n, ts in previous.items() if deployed_at.get(n) == ts}
    out.update({n: deployed_at[n] for n, is_running in running.items()
                if is_running and n in deployed_at})
    return out
