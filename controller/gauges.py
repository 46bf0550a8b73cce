"""The leader's gauges of each pass (replicas by state, their health, the targets), made
again only where a deployment changed.

Design. A scrape reads the last `ClusterSnapshot` whole (`weir.metrics`), so a pass
replaces it whole; but making it walks every replica, and in the steady state nothing in
it changes from one pass to the next. `Gauges` keeps each deployment's rows and makes a
deployment's again only when the pass did it again (not in `unchanged`,
`weir.controller.deployment_changes`); a new snapshot is due only when a row or a target
changed, and it is made only when a scrape reads it (`ControllerMetrics.snapshot_later`):
a pass that changed one replica at 5,000 made the whole snapshot for nobody. Pure: the
caller stores the snapshot's maker.
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
    """Each deployment's gauge rows as of the last pass, and the targets they went with."""

    def __init__(self) -> None:
        self._rows: dict[Key, list[Row]] = {}
        self._targets: dict[Key, int] | None = None

    def update(self, groups: Mapping[Key, Iterable[ReplicaView]], unchanged: Collection[Key],
               targets: Mapping[Key, DeploymentTarget], failures: Collection[str],
               autoscaled: Collection[Key]) -> Callable[[], ClusterSnapshot] | None:
        """What makes the snapshot of this pass (what it reads is not changed later), or
        None if it is the last one's."""
        counts = {k: t.num_replicas for k, t in targets.items()}
        rows = {k: self._rows[k] for k in groups if k in unchanged and k in self._rows}
        for key in [k for k in groups if k not in rows]:
            rows[key] = gauge_rows(groups[key], failures)
        # A deployment done again (the sweep's) mostly has the rows it had.
        if rows == self._rows and counts == self._targets:
            return None
        self._rows, self._targets = rows, counts
        return functools.partial(snapshot_of_rows, rows, counts, frozenset(autoscaled))


def snapshot_of_rows(rows: Mapping[Key, list[Row]], counts: Mapping[Key, int],
                     autoscaled: frozenset[Key]) -> ClusterSnapshot:
    """The snapshot of every deployment's rows and target counts. Pure."""
    return cluster_snapshot(list(itertools.chain.from_iterable(rows.values())), counts,
                            autoscaled)
