"""Judging deployments' health: failures, crash-loop backoff, and recovery.

Design. A deployment whose replicas keep failing (a constructor that raises, a process that
dies, a failed health check) must not be restarted in a tight loop, and its status must say
why. `judge` is one pure step of the reconcile pass: given the targets, the replica views of
this pass and the previous judgement, it returns the new judgement. The failure it guards
against is stale trouble: the backoff and the message belong to one *version* of a
deployment, so a redeploy with fixed code starts clean (no inherited 30 s backoff, no old
message), and a deleted deployment's judgement is dropped with it.

Each broken replica is counted once: the same pass kills it (FAILED, UNHEALTHY) or forgets
it (DEAD), so it is not seen broken again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace

from weir.controller.reconciler import (
    BROKEN_STATES,
    DeploymentTarget,
    ReplicaView,
    Views,
    by_deployment,
)

#: Crash-loop backoff: 0.5 s after the first failure, doubling, at most this.
MAX_BACKOFF_S = 30.0
FIRST_BACKOFF_S = 0.5
#: After a replica could not even be started (its runtime_env failed), wait this long.
START_ERROR_BACKOFF_S = 5.0

Key = tuple[str, str]


@dataclass(frozen=True)
class DeploymentHealth:
    """The leader's judgement of one deployment's recent trouble (observed, not goal)."""

    #: The target version this judgement is about; a new version starts a new judgement.
    version: str = ""
    message: str = ""
    consecutive_failures: int = 0
    #: Monotonic time before which no replica of it is started (crash-loop backoff).
    backoff_until: float = 0.0
    #: The version and replica count that last reached HEALTHY.
    healthy_version: str = ""
    healthy_replicas: int = 0
    #: Why replicas it wants are not placed yet (no node has room): not a failure, so no
    #: backoff; cleared by the next pass that places them.
    waiting: str = ""
    #: What failed in this very pass: "startup" (a replica that never ran, or could not be
    #: launched), "health" (one that ran: a failed health check, a dead process), or "".
    new_failure: str = ""


def crash_loop_delay(consecutive_failures: int) -> float:
    """How long to wait before starting a replica again after `consecutive_failures`."""
    exponent = max(0, min(consecutive_failures, 16) - 1)
    return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2.0 ** exponent)


def is_failure(view: ReplicaView) -> bool:
    """Whether a replica's state is a failure to count (not a drained, stopping one)."""
    if view.stopping:
        return False
    if view.state in BROKEN_STATES:
        return True
    return view.state == "DEAD" and view.last_state != "STOPPING"


def failure_kind(view: ReplicaView) -> str:
    """"health" for a replica that failed after running, "startup" for one that never ran."""
    if view.state == "UNHEALTHY" or (view.state == "DEAD" and view.last_state == "RUNNING"):
        return "health"
    return "startup"


def judge(
    targets: Mapping[Key, DeploymentTarget],
    views: Views,
    previous: Mapping[Key, DeploymentHealth],
    *,
    now: float,
    start_errors: Mapping[Key, str] | None = None,
    unplaced: Mapping[Key, str] | None = None,
    unchanged: Collection[Key] = frozenset(),
) -> dict[Key, DeploymentHealth]:
    """The health of every targeted deployment after this pass.

    `views`: every replica's view, or the views grouped by deployment (`by_deployment`).
    `start_errors`: deployments whose replicas could not be launched last pass, and why.
    `unplaced`: deployments whose replicas found no node with room last pass, and why.
    `unchanged`: deployments whose judgement is the previous one (the caller knows that
    judging them again would give it: `weir.controller.deployment_changes`); their
    replicas are not looked at.
    """
    groups = by_deployment(views)
    out: dict[Key, DeploymentHealth] = {}
    for key, target in targets.items():
        if key in unchanged and key in previous:
            out[key] = previous[key]
            continue
        out[key] = judge_deployment(target, groups.get(key, ()), previous.get(key), now=now,
                                    start_error=(start_errors or {}).get(key, ""),
                                    unplaced=(unplaced or {}).get(key, ""))
    return out


def judge_deployment(target: DeploymentTarget, group: Iterable[ReplicaView],
                     previous: DeploymentHealth | None, *, now: float, start_error: str = "",
                     unplaced: str = "") -> DeploymentHealth:
    """One deployment's health after this pass, from its replicas' views (`group`).

    With the same inputs and no failure, the judgement it returns judged again is the
    same (what lets a pass skip an unchanged deployment); `now` is read only to back off
    after a failure, which changes the judgement."""
    health = previous or DeploymentHealth()
    if health.version != target.version:
        health = DeploymentHealth(version=target.version,
                                  healthy_version=health.healthy_version,
                                  healthy_replicas=health.healthy_replicas)
    health = replace(health, new_failure="")
    running = 0
    for v in group:
        if v.version != target.version:
            continue
        if v.state == "RUNNING" and not v.stopping:
            running += 1
        elif is_failure(v):
            failures = health.consecutive_failures + 1
            # A health failure outranks a startup one in the same pass.
            kind = ("health" if "health" in (health.new_failure, failure_kind(v))
                    else "startup")
            health = replace(health, message=v.message or f"replica {v.replica_id} failed",
                             consecutive_failures=failures, new_failure=kind,
                             backoff_until=now + crash_loop_delay(failures))
    health = replace(health, waiting=unplaced)
    if start_error:
        health = replace(health, message=start_error,
                         consecutive_failures=health.consecutive_failures + 1,
                         new_failure=health.new_failure or "startup",
                         backoff_until=max(health.backoff_until, now + START_ERROR_BACKOFF_S))
    if running >= target.num_replicas:
        health = replace(health, message="", consecutive_failures=0, backoff_until=0.0,
                         healthy_version=target.version,
                         healthy_replicas=target.num_replicas)
    return health


def may_start(health: Mapping[Key, DeploymentHealth], targets: Iterable[Key],
              now: float) -> frozenset[Key]:
    """The deployments not backing off now."""
    return frozenset(k for k in targets
                     if health.get(k, DeploymentHealth()).backoff_until <= now)
