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

from collections.abc import Iterable
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

    def of(self, kind: type) -> list[Action]:
        """Actions of one kind."""
        return [a for a in self.actions if isinstance(a, kind)]


def _stop_order(r: ReplicaView) -> tuple[int, str]:
    # Stop replicas that serve nothing yet first, running ones last.
    return (1 if r.state == "RUNNING" else 0, r.replica_id)


def plan(
    targets: Iterable[DeploymentTarget],
    replicas: Iterable[ReplicaView],
    *,
    may_start: frozenset[tuple[str, str]] | None = None,
    frozen_apps: frozenset[str] = frozenset(),
) -> Plan:
    """Compute the actions that move `replicas` toward `targets`.

    `may_start`: the deployments allowed to start replicas now (others are backing off after
    failures); None allows all. `frozen_apps`: apps whose targets are not known yet (being
    built); their replicas are left alone.
    """
    out = Plan()
    by_key: dict[tuple[str, str], list[ReplicaView]] = {}
    for r in replicas:
        if r.state == "DEAD":
            out.actions.append(Forget(r.replica_id))
            continue
        if r.stopping:
            if r.stop_overdue:
                out.actions.append(Stop(r.replica_id, "graceful shutdown timed out", kill=True))
            continue
        if r.state in BROKEN_STATES:
            out.actions.append(Stop(r.replica_id, f"replica is {r.state.lower()}", kill=True))
            continue
        if r.state == "STOPPING":
            continue
        by_key.setdefault((r.app, r.deployment), []).append(r)

    wanted = {(t.app, t.name): t for t in targets}
    for key, group in by_key.items():
        if key not in wanted and key[0] not in frozen_apps:
            for r in group:
                out.actions.append(Stop(r.replica_id, "deployment removed"))

    for key, target in wanted.items():
        group = by_key.get(key, [])
        new = [r for r in group if r.version == target.version]
        old = [r for r in group if r.version != target.version]
        new_running = [r for r in new if r.state == "RUNNING"]

        missing = target.num_replicas - len(new)
        if missing > 0 and (may_start is None or key in may_start):
            out.actions.extend(Start(target.app, target.name, target.version)
                               for _ in range(missing))
        elif missing < 0:
            for r in sorted(new, key=_stop_order)[:-missing]:
                out.actions.append(Stop(r.replica_id, "scaled down"))

        keep_old = max(0, target.num_replicas - len(new_running))
        # Keep the running old replicas serving until enough new ones run.
        old_sorted = sorted(old, key=_stop_order, reverse=True)
        for r in old_sorted[keep_old:]:
            out.actions.append(Stop(r.replica_id, "replaced by a new version"))

        for r in new_running:
            if (r.user_config_json != target.user_config_json
                    and r.pending_user_config != target.user_config_json):
                out.actions.append(Reconfigure(r.replica_id, target.user_config_json))
    return out
