"""The route table the leader pushes: a pure function of the goal and the replicas."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from weir.controller.goal import AppGoal, DeploymentPlan
from weir.protos import weir_pb2 as pb


def build_route_table(
    goals: Mapping[str, AppGoal],
    plans: Mapping[tuple[str, str], DeploymentPlan],
    replicas: Iterable[tuple[str, str, str, str, int]],
    http_options: Mapping[str, Any],
    only: Collection[tuple[str, str]] | None = None,
) -> pb.RouteTable:
    """Routes of every app with a route prefix, and each deployment's RUNNING replicas given
    as `(replica_id, app, deployment, address, ongoing)`; with `only`, the deployments of
    only these (keys), the routes still of every app."""
    table = pb.RouteTable(http_options_json=json.dumps(dict(http_options), sort_keys=True))
    for (app, name), p in sorted(plans.items()):
        goal = goals.get(app)
        if p.ingress and goal is not None and goal.route_prefix is not None:
            table.routes.append(pb.Route(route_prefix=goal.route_prefix, app=app,
                                         deployment=name))
    by_key: dict[tuple[str, str], list[pb.ReplicaTarget]] = {}
    for replica_id, app, name, address, ongoing in sorted(replicas):
        by_key.setdefault((app, name), []).append(
            pb.ReplicaTarget(replica_id=replica_id, address=address, ongoing=ongoing))
    for (app, name), p in sorted(plans.items()):
        if only is not None and (app, name) not in only:
            continue
        table.deployments.append(pb.DeploymentTargets(
            app=app, deployment=name,
            max_ongoing_requests=int(p.options["max_ongoing_requests"]),
            max_queued_requests=int(p.options["max_queued_requests"]),
            replicas=by_key.get((app, name), []),
        ))
    return table
