"""Health checks from outside: the leader asks each RUNNING replica over its session.

Design. A replica's own view of its health is not enough: a frozen process (SIGSTOP), an
event loop blocked by user code, or a replica cut off from the controller keeps reporting
(or keeps its last report) HEALTHY. As in Ray Serve, the controller checks every replica
each `health_check_period_s`, bounded by `health_check_timeout_s`; the replica runs the
user's `check_health()`. HEALTH_CHECK_FAILURE_THRESHOLD failures in a row (an unhealthy
answer, no answer in time, or no session to ask on) make it UNHEALTHY: it leaves routing,
is killed and replaced, and the other replicas serve meanwhile.

The question goes on the stream the replica already holds to the leader (a CHECK_HEALTH
command with an id) and the answer comes back in one of its reports (`health_check`,
with the same id). A unary call per replica per period cost the leader a gRPC call, a
channel and a task each: 14 % of its busy time at 2,000 replicas, 1,000 calls a second at
10,000. The timeout is the leader's, as before: a replica that cannot answer (frozen,
its loop blocked, its check hung) is one that does not answer in time, found by the next
pass (`CheckBook.expired`; passes come at least every TICK_S, so at most that late). A
timer per check cost the leader more than the rest of the check's bookkeeping. An answer
with an id the leader no longer waits for (late, or from an earlier session) counts for
nothing.

Which replicas are due and how failures count is pure (`due_checks`, `CheckBook`);
`HealthProber` only sends the commands and takes the answers. The reconcile pass reads the
result (`failures`) as observations.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import structlog

from weir.controller.reconciler import ReplicaView
from weir.protos import weir_pb2 as pb

log = structlog.get_logger("weir.controller.health")

#: Consecutive failed checks that make a replica UNHEALTHY (Ray Serve's threshold).
HEALTH_CHECK_FAILURE_THRESHOLD = 3
#: Why a check failed when the replica had no session to ask it on.
NO_SESSION = "unreachable (no session with the leader)"

#: Sends a command on a replica's session; False if it has none now.
Send = Callable[[str, pb.ReplicaCommand], bool]


@dataclass(frozen=True)
class CheckTarget:
    """A RUNNING replica to check, with its deployment's health-check options."""

    replica_id: str
    period_s: float
    timeout_s: float


def due_checks(targets: Iterable[CheckTarget], last_started: Mapping[str, float],
               in_flight: Iterable[str], now: float) -> list[CheckTarget]:
    """The replicas whose next check is due: a period after the last one started (or after
    the replica was first seen RUNNING), and none in flight."""
    busy = set(in_flight)
    return [t for t in targets if t.replica_id not in busy
            and t.replica_id in last_started and now - last_started[t.replica_id] >= t.period_s]


def answer_reason(answer: pb.HealthCheckAnswer) -> str:
    """Why an answer is a failure ("" if the replica is healthy)."""
    if answer.healthy:
        return ""
    return answer.message or "check_health() failed"


class CheckBook:
    """Which checks are due and in flight, and each replica's failures in a row. Pure (no
    I/O, the clock passed in): `HealthProber` sends what `start` returns and reports each
    check's end to `finish`."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.last_started: dict[str, float] = {}
        #: Replica id -> the id of its check in flight.
        self.in_flight: dict[str, int] = {}
        #: Replica id -> when its check in flight times out, and its timeout.
        self._deadlines: dict[str, tuple[float, float]] = {}
        self.consecutive: dict[str, int] = {}
        #: Replica id -> why it failed its last HEALTH_CHECK_FAILURE_THRESHOLD checks.
        self.failures: dict[str, str] = {}

    def start(self, targets: list[CheckTarget], now: float
              ) -> tuple[list[str], list[tuple[CheckTarget, int]]]:
        """The replicas no longer to check (forgotten here), and the checks due now, each
        with its new id (taken as in flight). A replica first listed now is due a period
        later."""
        wanted = {t.replica_id for t in targets}
        gone = [r for r in self.last_started if r not in wanted]
        for replica_id in gone:
            self.forget(replica_id)
        for t in targets:
            self.last_started.setdefault(t.replica_id, now)
        due = []
        for t in due_checks(targets, self.last_started, self.in_flight, now):
            check_id = next(self._ids)
            self.last_started[t.replica_id] = now
            self.in_flight[t.replica_id] = check_id
            self._deadlines[t.replica_id] = (now + t.timeout_s, t.timeout_s)
            due.append((t, check_id))
        return gone, due

    def expired(self, now: float) -> list[tuple[str, int, str]]:
        """The checks in flight not answered within their timeout, each as (replica id,
        check id, why it failed), for `finish`."""
        return [(rid, self.in_flight[rid], f"no answer within health_check_timeout_s={t:g}")
                for rid, (deadline, t) in self._deadlines.items() if now >= deadline]

    def finish(self, replica_id: str, check_id: int, reason: str) -> bool | None:
        """Check `check_id` of a replica ended: passed (`reason` empty) or failed for
        `reason`. None if that is not the check in flight (late, or the replica was
        forgotten: nothing changes); else True if this failure made the replica UNHEALTHY
        (the HEALTH_CHECK_FAILURE_THRESHOLD-th in a row), False otherwise. A pass ends the
        run of failures but not UNHEALTHY: that replica is being replaced."""
        if self.in_flight.get(replica_id) != check_id:
            return None
        del self.in_flight[replica_id]
        del self._deadlines[replica_id]
        if not reason:
            self.consecutive.pop(replica_id, None)
            return False
        count = self.consecutive[replica_id] = self.consecutive.get(replica_id, 0) + 1
        if count >= HEALTH_CHECK_FAILURE_THRESHOLD and replica_id not in self.failures:
            self.failures[replica_id] = reason
            return True
        return False

    def forget(self, replica_id: str) -> None:
        """Drop everything about a replica (it stopped being RUNNING or is gone)."""
        self.last_started.pop(replica_id, None)
        self.in_flight.pop(replica_id, None)
        self._deadlines.pop(replica_id, None)
        self.consecutive.pop(replica_id, None)
        self.failures.pop(replica_id, None)


class HealthProber:
    """Sends the checks `CheckBook` finds due on the replicas' sessions (`send`) and takes
    the answers (`answered`); each update fails the checks past their timeout."""

    def __init__(self, on_unhealthy: Callable[[], None], clock: Callable[[], float],
                 send: Send) -> None:
        self._on_unhealthy = on_unhealthy
        self._clock = clock
        self._send = send
        self.book = CheckBook()
        #: Replica id -> why it is unhealthy (the same dict for the leader's life: the
        #: route table reads it).
        self.failures = self.book.failures

    def update(self, targets: list[CheckTarget]) -> None:
        """Fail the checks past their timeout, ask the replicas whose checks are due, and
        forget replicas no longer RUNNING."""
        now = self._clock()
        for rid, check_id, reason in self.book.expired(now):
            self._finish(rid, check_id, reason)
        for target, check_id in self.book.start(targets, now)[1]:
            command = pb.ReplicaCommand(kind=pb.CHECK_HEALTH, health_check_id=check_id)
            if not self._send(target.replica_id, command):
                self._finish(target.replica_id, check_id, NO_SESSION)

    def answered(self, replica_id: str, answer: pb.HealthCheckAnswer) -> None:
        """A replica's session brought the answer to a check."""
        self._finish(replica_id, answer.check_id, answer_reason(answer))

    def forget(self, replica_id: str) -> None:
        """Drop everything about a replica (it stopped being RUNNING or is gone)."""
        self.book.forget(replica_id)

    async def stop(self) -> None:
        """Nothing runs between updates: kept for the leader's orderly stop."""

    def _finish(self, replica_id: str, check_id: int, reason: str) -> None:
        verdict = self.book.finish(replica_id, check_id, reason)
        if verdict is None:
            return
        if reason:
            log.warning("health check failed", replica_id=replica_id, reason=reason,
                        consecutive=self.book.consecutive.get(replica_id, 0))
        if verdict:
            self._on_unhealthy()


class CheckTargets:
    """The replicas to health-check: each RUNNING one not stopping that registered with
    this leader, with its deployment's options. Kept across passes: only the replicas
    viewed again (the sweep's among them) are looked at again, unless a deployment's
    check options changed. Pure (no I/O)."""

    def __init__(self) -> None:
        self._checks: dict[str, CheckTarget] = {}
        self._periods: dict[tuple[str, str], tuple[float, float]] = {}

    def update(self, periods: dict[tuple[str, str], tuple[float, float]],
               views: Iterable[ReplicaView], reviewed: Iterable[str],
               viewed: Mapping[str, ReplicaView],
               address_of: Callable[[str], str | None]) -> list[CheckTarget]:
        """The checks now: `periods` gives each deployment's (period, timeout); `views`
        every replica as the pass viewed it, `reviewed` the ids viewed again since the
        last update (`viewed`: their views); `address_of` the address a replica registered
        with this leader (None: it has not; a replica whose session has since broken is
        still checked, and fails)."""
        if periods != self._periods:
            self._checks = {}
            due: Iterable[ReplicaView] = views
        else:
            reviewed = list(reviewed)
            due = [v for rid in reviewed if (v := viewed.get(rid)) is not None]
            for rid in reviewed:
                self._checks.pop(rid, None)
        self._periods = periods
        for v in due:
            period = periods.get((v.app, v.deployment))
            if (v.state == "RUNNING" and not v.stopping and period is not None
                    and address_of(v.replica_id) is not None):
                self._checks[v.replica_id] = CheckTarget(v.replica_id, *period)
            else:
                self._checks.pop(v.replica_id, None)
        return list(self._checks.values())
