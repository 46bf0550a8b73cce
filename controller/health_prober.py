"""Health checks: every RUNNING replica proves its health to the leader each period.

Design. A replica's own view of its health is not enough: a frozen process (SIGSTOP), an
event loop blocked by user code, or a replica cut off from the controller keeps (or keeps
its last report) HEALTHY. As in Ray Serve, each replica's `check_health()` runs every
`health_check_period_s`, bounded by `health_check_timeout_s`, and
HEALTH_CHECK_FAILURE_THRESHOLD failures in a row make it UNHEALTHY: it leaves routing, is
killed and replaced, and the other replicas serve meanwhile.

The replica runs its checks on its own schedule and sends each outcome in a report
(`weir.replica.session`); each answer promises the next within `next_within_s`. What the
leader counts as a failure: an unhealthy answer, or a promise broken (no answer in time: a
frozen process, a blocked loop, a hung check that could not even time out, a replica with
no session). The leader used to ask for each check with a command on the session: 500
commands a second out of the leader at 5,000 replicas, and as many answers in, each in a
report of its own; now a healthy answer rides on a report going out anyway when one does.
A replica whose promise is broken is next due max(period, timeout) later, as a check in
flight would have timed out again.

When each replica is due and how failures count is pure (`CheckBook`, `CheckTargets`);
`HealthProber` takes the answers and the passes' views. The reconcile pass reads the result
(`failures`) as observations. Passes come at least every TICK_S, so a broken promise is
found at most that late; no timer per replica.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from weir.controller.goal import DeploymentPlan
from weir.controller.observe import SessionReport
from weir.controller.reconciler import ReplicaView
from weir.health_promise import next_answer_within
from weir.protos import weir_pb2 as pb

log = structlog.get_logger("weir.controller.health")

#: Consecutive failed checks that make a replica UNHEALTHY (Ray Serve's threshold).
HEALTH_CHECK_FAILURE_THRESHOLD = 3
#: Why a check failed when its replica had no session with the leader when it was due (a
#: check due while the session is down waits its promise out like one unanswered: at a
#: failover thousands of replicas re-register, and failing them at once made the leader
#: kill running replicas that had not come back yet).
NO_SESSION = "unreachable (no session with the leader)"


@dataclass(frozen=True)
class CheckTarget:
    """A RUNNING replica to check, with its deployment's health-check options."""

    replica_id: str
    period_s: float
    timeout_s: float

    @property
    def first_within_s(self) -> float:
        """How soon its first answer is due after it became a target: what a replica
        promises with each answer (`next_answer_within`)."""
        return next_answer_within(self.period_s, self.timeout_s)

    @property
    def again_within_s(self) -> float:
        """After a broken promise, how soon the next answer is due: a check in flight with
        no answer would have timed out again by then, or the next one begun."""
        return max(self.period_s, self.timeout_s)


@dataclass(frozen=True)
class CheckChanges:
    """What changed of the checks since the last update (`CheckTargets.update`)."""

    #: Replicas to check that were not, or whose deployment's period or timeout changed.
    put: list[CheckTarget] = field(default_factory=list)
    #: Replicas no longer to check (they left RUNNING, are stopping, or are gone).
    removed: list[str] = field(default_factory=list)


def answer_reason(answer: pb.HealthCheckAnswer) -> str:
    """Why an answer is a failure ("" if the replica is healthy)."""
    if answer.healthy:
        return ""
    return answer.message or "check_health() failed"


def broken_promise(waited_s: float, target: CheckTarget) -> str:
    """Why a replica that sent no answer for `waited_s` failed its check."""
    return (f"no answer for {waited_s:g} s (health_check_period_s={target.period_s:g}, "
            f"health_check_timeout_s={target.timeout_s:g}): the replica is frozen, its "
            "loop blocked, or it is cut off")


class CheckBook:
    """When each replica's next answer is due, and its failures in a row. Pure (no I/O,
    the clock passed in): `HealthProber` gives it the changes of the targets (`change`),
    each answer (`answered`) and, each pass, the time (`expired`).

    Each pass's work is what changed and what is due, not every replica: the due times wait
    in a heap. An entry is pushed again when its replica's due time moves and the old one is
    left in place, found stale when it comes up (`_is_current`)."""

    def __init__(self) -> None:
        #: Replica id -> its check's options (the replicas to check).
        self.targets: dict[str, CheckTarget] = {}
        #: Replica id -> when its next answer is due, and since when it has waited (its
        #: last answer, or when it was first put).
        self.due: dict[str, tuple[float, float]] = {}
        #: (due time, replica id); stale entries among them.
        self._heap: list[tuple[float, str]] = []
        self.consecutive: dict[str, int] = {}
        #: Replica id -> why it failed its last HEALTH_CHECK_FAILURE_THRESHOLD checks.
        self.failures: dict[str, str] = {}

    def change(self, put: Iterable[CheckTarget], removed: Iterable[str], now: float) -> None:
        """Forget the replicas `removed`; check those `put` with their (new) options. A
        replica first put now owes its first answer `first_within_s` from now; one already
        checked keeps its due time (its promise stands)."""
        for replica_id in removed:
            self.forget(replica_id)
        for t in put:
            self.targets[t.replica_id] = t
            if t.replica_id not in self.due:
                self._set_due(t.replica_id, now + t.first_within_s, now)
        # Stale entries (answers come every period) would otherwise pile up until their
        # due time: keep the heap within twice the targets.
        if len(self._heap) > 2 * len(self.targets) + 64:
            self._heap = [e for e in self._heap if self._is_current(*e)]
            heapq.heapify(self._heap)

    def answered(self, replica_id: str, reason: str, next_within_s: float,
                 now: float) -> bool | None:
        """A replica's answer came: healthy (`reason` empty) or not, with its next promised
        within `next_within_s` (0: none promised; the target's `first_within_s` then).
        None if the replica is not checked (nothing changes); else whether this failure
        made it UNHEALTHY (`_count`)."""
        t = self.targets.get(replica_id)
        if t is None:
            return None
        self._set_due(replica_id, now + (next_within_s or t.first_within_s), now)
        return self._count(replica_id, reason)

    def expired(self, now: float, connected: Callable[[str], bool] = lambda _: True
                ) -> list[tuple[str, str, bool]]:
        """The replicas whose promised answer did not come by now, each as (replica id, why
        it failed, whether that made it UNHEALTHY): each counts as a failed check and is
        next due `again_within_s` from now. `connected` says whether a replica has a
        session now (one that has not fails as NO_SESSION)."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            at, replica_id = heapq.heappop(self._heap)
            if not self._is_current(at, replica_id):
                continue
            t = self.targets[replica_id]
            reason = (broken_promise(round(now - self.due[replica_id][1], 1), t)
                      if connected(replica_id) else NO_SESSION)
            self._set_due(replica_id, now + t.again_within_s, self.due[replica_id][1])
            out.append((replica_id, reason, self._count(replica_id, reason)))
        return out

    def forget(self, replica_id: str) -> None:
        """Drop everything about a replica (it stopped being RUNNING or is gone); its heap
        entries go stale."""
        self.targets.pop(replica_id, None)
        self.due.pop(replica_id, None)
        self.consecutive.pop(replica_id, None)
        self.failures.pop(replica_id, None)

    def _set_due(self, replica_id: str, at: float, since: float) -> None:
        self.due[replica_id] = (at, since)
        heapq.heappush(self._heap, (at, replica_id))

    def _count(self, replica_id: str, reason: str) -> bool:
        """Count one check's outcome: True if this failure is the
        HEALTH_CHECK_FAILURE_THRESHOLD-th in a row (the replica is UNHEALTHY now). A pass
        ends the run of failures but not UNHEALTHY: that replica is being replaced."""
        if not reason:
            self.consecutive.pop(replica_id, None)
            return False
        count = self.consecutive[replica_id] = self.consecutive.get(replica_id, 0) + 1
        if count >= HEALTH_CHECK_FAILURE_THRESHOLD and replica_id not in self.failures:
            self.failures[replica_id] = reason
            return True
        return False

    def _is_current(self, at: float, replica_id: str) -> bool:
        """Whether a heap entry is its replica's due time now."""
        due = self.due.get(replica_id)
        return due is not None and due[0] == at


class HealthProber:
    """Takes the replicas' answers (`answered`) and, each pass, fails the replicas whose
    promised answer did not come (`update`)."""

    def __init__(self, on_unhealthy: Callable[[], None], clock: Callable[[], float],
                 connected: Callable[[str], bool],
                 report_of: Callable[[str], SessionReport | None]) -> None:
        self._on_unhealthy = on_unhealthy
        self._clock = clock
        self._connected = connected
        self._report_of = report_of
        self.book = CheckBook()
        #: The replicas to check, as of the last pass (`follow`).
        self.targets = CheckTargets()
        #: Replica id -> why it is unhealthy (the same dict for the leader's life: the
        #: route table reads it).
        self.failures = self.book.failures

    def follow(self, plans: Mapping[tuple[str, str], DeploymentPlan],
               views: Iterable[ReplicaView], reviewed: Iterable[str],
               viewed: Mapping[str, ReplicaView]) -> None:
        """A pass viewed the replicas (`CheckTargets.update` says what those arguments
        are; `plans`: the deployments' options): take what changed of the checks, then
        `update`."""
        self.update(self.targets.update(check_periods(plans), views, reviewed, viewed,
                                        self._address_of))

    def update(self, changes: CheckChanges) -> None:
        """Fail the replicas whose promised answer is late, then take the changes of the
        targets (forget replicas no longer RUNNING)."""
        now = self._clock()
        for rid, reason, unhealthy in self.book.expired(now, self._connected):
            self._judged(rid, reason, unhealthy)
        self.book.change(changes.put, changes.removed, now)

    def answered(self, replica_id: str, answer: pb.HealthCheckAnswer) -> None:
        """A replica's report brought the outcome of one of its checks."""
        reason = answer_reason(answer)
        unhealthy = self.book.answered(replica_id, reason, answer.next_within_s,
                                       self._clock())
        if unhealthy is not None:
            self._judged(replica_id, reason, unhealthy)

    def forget(self, replica_id: str) -> None:
        """Drop everything about a replica (it stopped being RUNNING or is gone)."""
        self.book.forget(replica_id)

    async def stop(self) -> None:
        """Nothing runs between updates: kept for the leader's orderly stop."""

    def _address_of(self, replica_id: str) -> str | None:
        report = self._report_of(replica_id)
        return report.address if report is not None else None

    def _judged(self, replica_id: str, reason: str, unhealthy: bool) -> None:
        if reason:
            log.warning("health check failed", replica_id=replica_id, reason=reason,
                        consecutive=self.book.consecutive.get(replica_id, 0))
        if unhealthy:
            self._on_unhealthy()


def check_periods(plans: Mapping[tuple[str, str], DeploymentPlan]
                  ) -> dict[tuple[str, str], tuple[float, float]]:
    """Each deployment's health-check (period, timeout), from its options."""
    return {k: (float(p.options["health_check_period_s"]),
                float(p.options["health_check_timeout_s"])) for k, p in plans.items()}


class CheckTargets:
    """The replicas to health-check: each RUNNING one not stopping that registered with
    this leader, with its deployment's options. Kept across passes: only the replicas
    viewed again (the sweep's among them) are looked at again, unless a deployment's
    check options changed; each update gives what changed. Pure (no I/O)."""

    def __init__(self) -> None:
        self._checks: dict[str, CheckTarget] = {}
        self._periods: dict[tuple[str, str], tuple[float, float]] = {}

    def update(self, periods: dict[tuple[str, str], tuple[float, float]],
               views: Iterable[ReplicaView], reviewed: Iterable[str],
               viewed: Mapping[str, ReplicaView],
               address_of: Callable[[str], str | None]) -> CheckChanges:
        """What changed of the checks: `periods` gives each deployment's (period,
        timeout); `views` every replica as the pass viewed it (looked at only when
        `periods` changed), `reviewed` the ids viewed again since the last update
        (`viewed`: their views); `address_of` the address a replica registered with this
        leader (None: it has not; a replica whose session has since broken is still
        checked, and fails)."""
        full = periods != self._periods
        self._periods = periods
        reviewed = list(reviewed)
        looked_at = views if full else [v for r in reviewed if (v := viewed.get(r)) is not None]
        changes = CheckChanges()
        kept: set[str] = set()
        # The sweep brings a tenth of the replicas here each pass, mostly unchanged: a
        # target is made (and the book told) only for a replica whose check changed.
        for v in looked_at:
            rid = v.replica_id
            old = self._checks.get(rid)
            period = periods.get((v.app, v.deployment))
            # A session is dropped only with its record: one checked already registered.
            if (v.state == "RUNNING" and not v.stopping and period is not None
                    and (old is not None or address_of(rid) is not None)):
                kept.add(rid)
                if old is None or (old.period_s, old.timeout_s) != period:
                    t = self._checks[rid] = CheckTarget(rid, *period)
                    changes.put.append(t)
            elif old is not None:
                del self._checks[rid]
                changes.removed.append(rid)
        # Not viewed now (their records are gone), or not among the views at all.
        gone = ([r for r in self._checks if r not in kept] if full
                else [r for r in reviewed if r not in viewed and r in self._checks])
        for rid in gone:
            del self._checks[rid]
            changes.removed.append(rid)
        return changes
