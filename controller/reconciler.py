"""Level-triggered reconciliation: `plan(goal, observed) -> actions`, from scratch each time.

The leader calls `plan` every tick (and on every change) with what it reads from etcd and
what replicas report; it never trusts a remembered "already done". Actions are idempotent:
starting is bounded by the target count, stopping a replica already stopping is skipped.

Rolling updates: replicas of a new version start first; old ones are stopped only as new
ones reach RUNNING, so the deployment keeps its capacity and no request fails. Changing
only num_replicas starts or stops replicas of the running version; changing only
user_config reconfigures the running replicas in place (their version does not change).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

#: Replica states (`weir.controller.observe`): those replicas report, plus PENDING
#: (launched, not registered yet), DEAD (the process is gone) and UNHEALTHY (failed a
#: health check).
LIVE_STATES = frozenset({"PENDING", "STARTING", "INITIALIZING", "RUNNING"})
BROKEN_STATES = frozenset({"FAILED", "UNHEALTHY"})


@dataclass(frozen=True)
class DeploymentTarget:
    """What one deployment should be: its version, size and user_config."""

    app: str
    name: str
    version: str
    num_replicas: int
    user_config_json: str


@dataclass(frozen=True)
class ReplicaView:
    """One replica as the leader sees it now."""

    replica_id: str
    app: str
    deployment: str
    version: str
    state: str
    user_config_json: str = ""
    #: A STOP was sent (or the process is being killed).
    stopping: bool = False
    #: Stopping, and its graceful shutdown time is over.
    stop_overdue: bool = False
    #: A RECONFIGURE for this user_config was sent and not yet acknowledged.
    pending_user_config: str | None = None
    #: Why it is in a broken state (its own report, a failed health check, its death).
    message: str = ""
    #: The state it reported last before this one (tells a drained exit from a crash).
    last_state: str = ""
    #: Requests it is working on, as it last reported (0 while it is not connected).
    ongoing: int = 0


@dataclass(frozen=True)
class Start:
    """Launch one replica of a deployment's version."""

    app: str
    deployment: str
    version: str


@dataclass(frozen=True)
class Stop:
    """Drain and stop a replica (`kill`: at once, it is broken or overdue)."""

    replica_id: str
    reason: str
    kill: bool = False


@dataclass(frozen=True)
class Reconfigure:
    """Send a new user_config to a running replica."""

    replica_id: str
    user_config_json: str


@dataclass(frozen=True)
class Forget:
    """Drop the record of a replica whose process is gone."""

    replica_id: str


Action = Start | Stop | Reconfigure | Forget


@dataclass
class Plan:
    """The actions of one reconcile pass."""

    actions: list[Action] = field(default_factory=list)
    #: The deployments that have actions in it.
    deployments: set[tuple[str, str]] = field(default_factory=set)

    def of(self, kind: type) -> list[Action]:
        """Actions of one kind."""
        return [a for a in self.actions if isinstance(a, kind)]


#: Replicas' views: every one, or grouped by deployment (`by_deployment`).
Views = Iterable[ReplicaView] | Mapping[tuple[str, str], Collection[ReplicaView]]


def by_deployment(views: Views) -> Mapping[tuple[str, str], Collection[ReplicaView]]:
    """The views grouped by deployment (as they are, if grouped already)."""
    if isinstance(views, Mapping):
        return views
    groups: dict[tuple[str, str], list[ReplicaView]] = {}
    for v in views:
        groups.setdefault((v.app, v.deployment), []).append(v)
    return groups


def _stop_order(r: ReplicaView) -> tuple[int, str]:
    # Stop replicas that serve nothing yet first, running ones last.
    return (1 if r.state == "RUNNING" else 0, r.replica_id)


def plan(
    targets: Iterable[DeploymentTarget],
    replicas: Views,
    *,
    may_start: frozenset[tuple[str, str]] | None = None,
    frozen_apps: frozenset[str] = frozenset(),
    unchanged: Collection[tuple[str, str]] = frozenset(),
) -> Plan:
    """Compute the actions that move `replicas` toward `targets`.

    `may_start`: the deployments allowed to start replicas now (others are backing off after
    failures); None allows all. `frozen_apps`: apps whose targets are not known yet (being
    built); their replicas are left alone. `unchanged`: deployments the caller knows have
    nothing to do (planned last pass with the same inputs, to no action: `weir.controller.
    deployment_changes`); their replicas are not looked at.
    """
    out = Plan()
    groups = by_deployment(replicas)
    wanted = {(t.app, t.name): t for t in targets}
    for key in [*groups, *(k for k in wanted if k not in groups)]:
        if key in unchanged:
            continue
        actions = plan_deployment(wanted.get(key), groups.get(key, ()),
                                  may_start=may_start is None or key in may_start,
                                  frozen=key[0] in frozen_apps)
        if actions:
            out.actions.extend(actions)
            out.deployments.add(key)
    return out


def plan_deployment(target: DeploymentTarget | None, replicas: Iterable[ReplicaView], *,
                    may_start: bool = True, frozen: bool = False) -> list[Action]:
    """The actions that move one deployment's `replicas` toward its `target` (None: the
    deployment is no longer wanted, and its replicas stop unless its app is `frozen`,
    being built). `may_start`: it is not backing off after failures."""
    actions: list[Action] = []
    group: list[ReplicaView] = []
    for r in replicas:
        if r.state == "DEAD":
            actions.append(Forget(r.replica_id))
            continue
        if r.stopping:
            if r.stop_overdue:
                actions.append(Stop(r.replica_id, "graceful shutdown timed out", kill=True))
            continue
        if r.state in BROKEN_STATES:
            actions.append(Stop(r.replica_id, f"replica is {r.state.lower()}", kill=True))
            continue
        if r.state == "STOPPING":
            continue
        group.append(r)

    if target is None:
        if not frozen:
            actions.extend(Stop(r.replica_id, "deployment removed") for r in group)
        return actions

    new = [r for r in group if r.version == target.version]
    old = [r for r in group if r.version != target.version]
    new_running = [r for r in new if r.state == "RUNNING"]

    missing = target.num_replicas - len(new)
    if missing > 0 and may_start:
        actions.extend(Start(target.app, target.name, target.version) for _ in range(missing))
    elif missing < 0:
        for r in sorted(new, key=_stop_order)[:-missing]:
            actions.append(Stop(r.replica_id, "scaled down"))

    keep_old = max(0, target.num_replicas - len(new_running))
    # Keep the running old replicas serving until enough new ones run.
    old_sorted = sorted(old, key=_stop_order, reverse=True)
    for r in old_sorted[keep_old:]:
        actions.append(Stop(r.replica_id, "replaced by a new version"))

    for r in new_running:
        # "": not known (no report on this leader's sessions). A replica that reported
        # always says which it applied ("null" for none): reconfiguring on "" called the
        # user's reconfigure() again with the same config after a failover.
        if (r.user_config_json and r.user_config_json != target.user_config_json
                and r.pending_user_config != target.user_config_json):
            actions.append(Reconfigure(r.replica_id, target.user_config_json))
    return actions
