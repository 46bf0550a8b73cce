"""Status roll-up: deployments' statuses into applications', with the meanings of Ray
Serve's `serve status` (seed 001) and the statuses of its current versions.

Application: NOT_STARTED (shown by the CLI for an unknown name), DEPLOYING, DEPLOY_FAILED,
RUNNING, UNHEALTHY, DELETING (deleted, its replicas still stopping). Each deployment's
status and `status_trigger` come from the state machine of `weir.controller.
deployment_status`; an application takes the worst of its deployments' (Ray's ranking:
DEPLOY_FAILED, then UNHEALTHY, then a config update in progress, then steady or
autoscaling, which is RUNNING).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from weir.controller.deployment_status import StatusInfo, advance, deleting
from weir.controller.health import DeploymentHealth
from weir.controller.reconciler import DeploymentTarget, ReplicaView, Views, by_deployment
from weir.statuses import ApplicationStatus as A
from weir.statuses import DeploymentStatus as S
from weir.statuses import DeploymentStatusTrigger as T

Key = tuple[str, str]


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


def replica_counts(replicas: Iterable[ReplicaView]) -> dict[str, int]:
    """How many replicas are in each state (a stopping one counts as STOPPING)."""
    return dict(Counter("STOPPING" if r.stopping else r.state for r in replicas))


def application_status(app: AppView, deployments: Mapping[str, StatusInfo]) -> tuple[str, str]:
    """(status, message) of an application from its deployments' statuses."""
    if app.build_error:
        return A.DEPLOY_FAILED, app.build_error
    if not app.built:
        return A.DEPLOYING, "building the application (importing its code)"
    by_name = sorted(deployments.items())
    for name, info in by_name:
        if info.status == S.DEPLOY_FAILED:
            return A.DEPLOY_FAILED, f"deployment {name!r} failed to deploy: {info.message}"
    for name, info in by_name:
        if info.status == S.UNHEALTHY:
            return A.UNHEALTHY, f"deployment {name!r} is unhealthy: {info.message}"
    if any(i.status == S.UPDATING or i.status_trigger == T.CONFIG_UPDATE_STARTED
           for i in deployments.values()):
        return A.DEPLOYING, ""
    return A.RUNNING, ""


@dataclass(frozen=True)
class Rollup:
    """A pass's status: the `applications:` document, each deployment's status (the
    state machine's `previous` next time) and its replicas counted by state."""

    doc: dict[str, Any]
    statuses: dict[Key, StatusInfo]
    counts: dict[Key, dict[str, int]]


def roll_up(
    apps: Iterable[AppView],
    targets: Mapping[Key, DeploymentTarget],
    replicas: Views,
    health: Mapping[Key, DeploymentHealth],
    previous: Mapping[Key, StatusInfo],
    *,
    autoscaled: Collection[Key] = (),
    autoscaling: Mapping[Key, Mapping[str, Any]] | None = None,
    unchanged: Collection[Key] = frozenset(),
    counts: Mapping[Key, dict[str, int]] | None = None,
) -> Rollup:
    """The status of every application and deployment after a pass.

    `autoscaled`: deployments whose replica count the autoscaler sets. `autoscaling`: what
    to show of each autoscaled deployment's decision (its target...). An application that
    is no longer in `apps` but still has replicas is DELETING. `unchanged`: deployments
    whose status and replica counts are the previous ones (`previous`, `counts`: the last
    roll-up's), as the caller knows (`weir.controller.deployment_changes`); their replicas
    are not looked at."""
    by_key = by_deployment(replicas)
    apps = list(apps)
    names = {a.name for a in apps}
    kept = counts or {}
    out_counts: dict[Key, dict[str, int]] = {}

    def counted(key: Key) -> dict[str, int]:
        if key not in out_counts:
            out_counts[key] = (kept[key] if key in unchanged and key in kept
                               else replica_counts(by_key.get(key, ())))
        return out_counts[key]

    gone: dict[str, list[str]] = {}
    for (app_name, dep), group in sorted(by_key.items()):
        # Dead ones are only waiting to be forgotten: they hold up no delete.
        if app_name not in names and any(r.state != "DEAD" for r in group):
            gone.setdefault(app_name, []).append(dep)
    doc: dict[str, Any] = {}
    statuses: dict[Key, StatusInfo] = {}
    for app in apps:
        infos: dict[str, StatusInfo] = {}
        for name in app.deployments:
            key = (app.name, name)
            target = targets.get(key)
            if target is None:
                infos[name] = StatusInfo(message="waiting for the application to build")
                continue
            if key in unchanged and key in previous:
                infos[name] = statuses[key] = previous[key]
                continue
            infos[name] = statuses[key] = advance(
                previous.get(key), target, by_key.get(key, ()),
                health.get(key, DeploymentHealth()), autoscaled=key in autoscaled)
        status, message = application_status(app, infos)
        doc[app.name] = _app_doc(status, message, app.deployment_timestamp, app.route_prefix,
                                 infos, counted, app.name, autoscaling or {})
    for app_name, deps in gone.items():
        infos = {}
        for name in deps:
            infos[name] = statuses[(app_name, name)] = deleting(previous.get((app_name, name)))
        doc[app_name] = _app_doc(A.DELETING, "", 0.0, None, infos, counted, app_name, {})
    return Rollup(doc, statuses, out_counts)


def _app_doc(status: str, message: str, deployed_at: float, route_prefix: str | None,
             infos: Mapping[str, StatusInfo], counted: Callable[[Key], dict[str, int]],
             app_name: str, autoscaling: Mapping[Key, Mapping[str, Any]]) -> dict[str, Any]:
    deployments = []
    for name, info in infos.items():
        entry: dict[str, Any] = {
            "name": name, "status": info.status, "status_trigger": info.status_trigger,
            "message": info.message,
            # A copy: the counts are kept for the next roll-up, the document is the reader's.
            "replica_states": dict(counted((app_name, name)))}
        if (app_name, name) in autoscaling:
            entry["autoscaling"] = dict(autoscaling[(app_name, name)])
        deployments.append(entry)
    return {"app_status": {"status": status, "message": message,
                           "deployment_timestamp": deployed_at},
            "route_prefix": route_prefix,
            "deployment_statuses": deployments}
