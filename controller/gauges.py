"""The leader's gauges of each pass (replicas by state, their health, the targets), made
again only where a deployment changed.

Design. A scrape reads the last `ClusterSnapshot` whole (`weir.metrics`), so a pass
replaces it whole; but making it walks every replica, and in the steady state nothing in
it changes from one pass to the next. `Gauges` keeps each deployment's views and copies a
deployment's again only when the pass did it again (not in `unchanged`,
`weir.controller.deployment_changes`); a new snapshot is due only when a view, a target or
the failing replicas changed, and it is made only when a scrape reads it
(`ControllerMetrics.snapshot_later`): a pass that changed one replica at 5,000 made the
whole snapshot for nobody. Pure: the caller stores the snapshot's maker.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Collection, Iterable, Mapping

from weir.controller.reconciler import DeploymentTarget, ReplicaView
from weir.metrics import ClusterSnapshot, cluster_snapshot

Key = tuple[str, str]
Row = tuple[str, str, str, str, bool]


def gauge_rows(views: Iterable[ReplicaView], failures: Collection[str]) -> list[Row]:
    """(app, deployment, replica id, state, healthy) of each replica, as the gauges show
    it (a stopping one is STOPPING; healthy: RUNNING, not stopping, passing its checks)."""
    return [(v.app, v.deployment, v.replica_id, "STOPPING" if v.stopping else v.state,
             v.state == "RUNNING" and not v.stopping and v.replica_id not in failures)
            for v in views]


class Gauges:
    """Each deployment's views as of the last pass, and what they went with."""

    def __init__(self) -> None:
        self._views: dict[Key, list[ReplicaView]] = {}
        self._targets: dict[Key, int] | None = None
        self._failing: frozenset[str] = frozenset()

    def update(self, groups: Mapping[Key, Iterable[ReplicaView]], unchanged: Collection[Key],
               targets: Mapping[Key, DeploymentTarget], failures: Collection[str],
               autoscaled: Collection[Key]) -> Callable[[], ClusterSnapshot] | None:
        """What makes the snapshot of this pass (what it reads is not changed later), or
        None if it is the last one's. A deployment done again keeps a copy of its views
        (one list copy: the rows are made only by a scrape, `snapshot_of_views`; making
        them on every pass that changed a deployment was 7 % of a new leader's loop at a
        10,000 failover)."""
        counts = {k: t.num_replicas for k, t in targets.items()}
        views = {k: self._views[k] for k in groups if k in unchanged and k in self._views}
        for key in [k for k in groups if k not in views]:
            views[key] = list(groups[key])
        failing = frozenset(failures)
        # A deployment done again (the sweep's) mostly has the same view objects: the
        # comparison finds them the same by identity.
        if views == self._views and counts == self._targets and failing == self._failing:
            return None
        self._views, self._targets, self._failing = views, counts, failing
        return functools.partial(snapshot_of_views, views, failing, counts,
                                 frozenset(autoscaled))


def snapshot_of_views(views: Mapping[Key, list[ReplicaView]], failing: frozenset[str],
                      counts: Mapping[Key, int], autoscaled: frozenset[Key]) -> ClusterSnapshot:
    """The snapshot of every deployment's replicas and target counts. Pure."""
    return cluster_snapshot(
        list(itertools.chain.from_iterable(gauge_rows(v, failing) for v in views.values())),
        counts, autoscaled)
