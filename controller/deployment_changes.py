"""Which deployments a pass must judge, roll up and plan again, and which it can take as
the last pass left them.

Design. Judging (`weir.controller.health`), the status roll-up (`weir.controller.status`)
and the plan (`weir.controller.reconciler`) each walk a deployment's replicas; doing so
for every deployment on every pass (twice a second) was most of a pass at thousands of
replicas, though in the steady state nothing they read changes from one pass to the next.
Each of them is a deterministic function of the deployment's inputs: its replicas' views
(load aside, which only the autoscaler reads), its target, whether it autoscales, whether
its app is being built, why its replicas could not start or be placed last pass and, for
the plan, whether it may start replicas now (`may_start`, which the clock moves). So a
deployment can be taken as it was when
- none of those inputs changed since the last pass (the views: `Observations`, which
  compares each replica's view with its last), and
- the last pass left it settled: its judgement and status came out as they went in (a
  fixed point: the same inputs give them again) and its plan had no action (an action
  changes its replicas; one that did not take, a Start with no node, is planned again).
That is exactly what doing it again would give, so the pass stays level-triggered. As a
guard against a change this reasoning misses, a sweep (`weir.controller.sweep`) takes
every deployment again within SWEEP_S, whatever changed. Pure: no I/O, the clock passed
in.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from weir.controller.reconciler import DeploymentTarget
from weir.controller.sweep import Sweep

Key = tuple[str, str]


@dataclass(frozen=True)
class DeploymentInputs:
    """What judging and the status read of one deployment, besides its replicas."""

    #: Its target as the pass begins (the autoscaler's last decision); None: not wanted
    #: (deleted, or its app not built yet).
    target: DeploymentTarget | None
    autoscaled: bool = False
    #: Its app is being built: its replicas are left alone.
    frozen: bool = False
    #: Why its replicas could not be launched, or found no node, last pass.
    start_error: str = ""
    unplaced: str = ""


@dataclass(frozen=True)
class PlanInputs:
    """What the plan reads of one deployment, besides its replicas and `DeploymentInputs`."""

    #: Its target after this pass's autoscaling.
    target: DeploymentTarget | None
    #: Not backing off after failures now.
    may_start: bool


def deployment_inputs(targets: Mapping[Key, DeploymentTarget], groups: Collection[Key],
                      autoscaled: Collection[Key], frozen_apps: Collection[str],
                      start_errors: Mapping[Key, str], unplaced: Mapping[Key, str]
                      ) -> dict[Key, DeploymentInputs]:
    """The inputs of every deployment with a target or with replicas (`groups`)."""
    return {k: DeploymentInputs(targets.get(k), k in autoscaled, k[0] in frozen_apps,
                                start_errors.get(k, ""), unplaced.get(k, ""))
            for k in [*targets, *(g for g in groups if g not in targets)]}


def unchanged_deployments(inputs: Mapping[Key, DeploymentInputs],
                          last: Mapping[Key, DeploymentInputs], changed: Collection[Key],
                          unsettled: Collection[Key]) -> frozenset[Key]:
    """The deployments of `inputs` a pass may take as the last left them: their replicas'
    views did not change (not in `changed`), their inputs are those of the last pass
    (`last`), and the last pass left them settled (not in `unsettled`)."""
    return frozenset(k for k, i in inputs.items()
                     if k not in changed and k not in unsettled and last.get(k) == i)


def unsettled_deployments(done: Iterable[Key], health_before: Mapping[Key, object],
                          health_after: Mapping[Key, object],
                          status_before: Mapping[Key, object],
                          status_after: Mapping[Key, object], planned: Collection[Key]
                          ) -> set[Key]:
    """Of the deployments a pass did again (`done`), those it did not leave at a fixed
    point: their judgement or status changed, or their plan had actions (`planned`)."""
    return {k for k in done if k in planned or health_after.get(k) != health_before.get(k)
            or status_after.get(k) != status_before.get(k)}


class DeploymentChanges:
    """The leader's memory of what its passes did with each deployment (one term)."""

    def __init__(self) -> None:
        #: Deployments whose replicas' views changed since the last pass went through.
        self._changed: set[Key] = set()
        self._inputs: dict[Key, DeploymentInputs] = {}
        self._plan_inputs: dict[Key, PlanInputs] = {}
        self._unsettled: set[Key] = set()
        self._sweep: Sweep[Key] = Sweep()
        #: The deployments the last `unchanged` swept (for tests and the bench).
        self.swept: set[Key] = set()

    def note(self, changed: Iterable[Key]) -> None:
        """Deployments whose replicas' views changed (kept until a pass goes through)."""
        self._changed.update(changed)

    def unchanged(self, inputs: Mapping[Key, DeploymentInputs], now: float,
                  sweep_s: float) -> frozenset[Key]:
        """The deployments this pass may judge and roll up as the last pass left them
        (`unchanged_deployments`), but for the sweep's share due by `now`."""
        self.swept = self._sweep.share(inputs.keys(), now, sweep_s)
        return unchanged_deployments(inputs, self._inputs, self._changed | self.swept,
                                     self._unsettled)

    def plan_unchanged(self, unchanged: Collection[Key],
                       inputs: Mapping[Key, PlanInputs]) -> frozenset[Key]:
        """Of the `unchanged` deployments, those whose plan inputs are also the last
        pass's (autoscaling did not resize them, nor did the clock end a backoff)."""
        return frozenset(k for k in unchanged if self._plan_inputs.get(k) == inputs.get(k))

    def settled(self, targets: Mapping[Key, DeploymentTarget]) -> frozenset[Key]:
        """The deployments the last pass left settled, with no change of their replicas
        noted since, that still have the target it had (`targets`: the targets now, for
        a read between passes)."""
        return frozenset(k for k, i in self._inputs.items()
                         if k not in self._unsettled and k not in self._changed
                         and i.target == targets.get(k))

    def passed(self, inputs: Mapping[Key, DeploymentInputs],
               plan_inputs: Mapping[Key, PlanInputs], unsettled: Iterable[Key]) -> None:
        """A pass went through with these inputs, leaving `unsettled` not settled."""
        self._inputs, self._plan_inputs = dict(inputs), dict(plan_inputs)
        self._unsettled = set(unsettled)
        self._changed = set()
