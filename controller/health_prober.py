"""Health checks from outside: the leader calls each RUNNING replica's CheckHealth.

Design. A replica's own view of its health is not enough: a frozen process (SIGSTOP), an
event loop blocked by user code, or a replica cut off from the controller keeps reporting
(or keeps its last report) HEALTHY. As in Ray Serve, the controller calls every replica's
health check each `health_check_period_s`, bounded by `health_check_timeout_s`; the replica
runs the user's `check_health()`. HEALTH_CHECK_FAILURE_THRESHOLD failures in a row (an
unhealthy answer, no answer in time, or no connection) make it UNHEALTHY: it leaves
routing, is killed and replaced, and the other replicas serve meanwhile.

The decision of which replicas are due is pure (`due_checks`); this class only moves the
calls and keeps their results, which the reconcile pass reads as observations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import grpc
import structlog

from weir import auth
from weir.controller.reconciler import ReplicaView
from weir.dataplane.transport import CHANNEL_OPTIONS
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc

log = structlog.get_logger("weir.controller.health")

#: Consecutive failed checks that make a replica UNHEALTHY (Ray Serve's threshold).
HEALTH_CHECK_FAILURE_THRESHOLD = 3


@dataclass(frozen=True)
class CheckTarget:
    """A RUNNING replica to check, with its deployment's health-check options."""

    replica_id: str
    address: str
    period_s: float
    timeout_s: float


def due_checks(targets: Iterable[CheckTarget], last_started: Mapping[str, float],
               in_flight: Iterable[str], now: float) -> list[CheckTarget]:
    """The replicas whose next check is due: a period after the last one started (or after
    the replica was first seen RUNNING), and none in flight."""
    busy = set(in_flight)
    return [t for t in targets if t.replica_id not in busy
            and t.replica_id in last_started and now - last_started[t.replica_id] >= t.period_s]


class HealthProber:
    """Runs the checks and remembers, per replica, why it is unhealthy."""

    def __init__(self, on_unhealthy: Callable[[], None], clock: Callable[[], float]) -> None:
        self._on_unhealthy = on_unhealthy
        self._clock = clock
        self._last_started: dict[str, float] = {}
        self._consecutive: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        #: A stub per channel: making one per check cost more than the check's own call
        #: at thousands of replicas.
        self._stubs: dict[str, pb_grpc.ReplicaStub] = {}
        #: Replica id -> why it failed its last HEALTH_CHECK_FAILURE_THRESHOLD checks.
        self.failures: dict[str, str] = {}

    def update(self, targets: list[CheckTarget]) -> None:
        """Start the checks that are due; forget replicas no longer RUNNING."""
        now = self._clock()
        wanted = {t.replica_id for t in targets}
        for replica_id in [r for r in self._last_started if r not in wanted]:
            self.forget(replica_id)
        addresses = {t.address for t in targets}
        for address in [a for a in self._channels if a not in addresses]:
            self._stubs.pop(address, None)
            asyncio.get_running_loop().create_task(self._channels.pop(address).close())
        for t in targets:
            self._last_started.setdefault(t.replica_id, now)
        for t in due_checks(targets, self._last_started, self._tasks, now):
            self._last_started[t.replica_id] = now
            self._tasks[t.replica_id] = asyncio.get_running_loop().create_task(self._check(t))

    def forget(self, replica_id: str) -> None:
        """Drop everything about a replica (it stopped being RUNNING or is gone)."""
        self._last_started.pop(replica_id, None)
        self._consecutive.pop(replica_id, None)
        self.failures.pop(replica_id, None)
        task = self._tasks.pop(replica_id, None)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        """Cancel checks in flight and close the channels."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._stubs.clear()

    def _stub(self, address: str) -> pb_grpc.ReplicaStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = auth.channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
            stub = self._stubs[address] = pb_grpc.ReplicaStub(channel)
        return stub

    async def _check(self, target: CheckTarget) -> None:
        reason = ""
        try:
            reply = await self._stub(target.address).CheckHealth(
                pb.HealthCheckRequest(), timeout=target.timeout_s)
            if not reply.healthy:
                reason = reply.message or "check_health() failed"
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                reason = f"no answer within health_check_timeout_s={target.timeout_s:g}"
            else:
                reason = f"unreachable ({exc.code().name}: {exc.details()})"
        finally:
            if self._tasks.get(target.replica_id) is asyncio.current_task():
                del self._tasks[target.replica_id]
        if target.replica_id not in self._last_started:
            return  # forgotten while the check ran
        if not reason:
            self._consecutive.pop(target.replica_id, None)
            return
        count = self._consecutive.get(target.replica_id, 0) + 1
        self._consecutive[target.replica_id] = count
        log.warning("health check failed", replica_id=target.replica_id, reason=reason,
                    consecutive=count)
        if count >= HEALTH_CHECK_FAILURE_THRESHOLD and target.replica_id not in self.failures:
            self.failures[target.replica_id] = reason
            self._on_unhealthy()


class CheckTargets:
    """The replicas to health-check: each RUNNING one not stopping, with its deployment's
    options. Kept across passes: only the replicas viewed again (the sweep's among them)
    are looked at again, unless a deployment's check options changed. Pure (no I/O)."""

    def __init__(self) -> None:
        self._checks: dict[str, CheckTarget] = {}
        self._periods: dict[tuple[str, str], tuple[float, float]] = {}

    def update(self, periods: dict[tuple[str, str], tuple[float, float]],
               views: Iterable[ReplicaView], reviewed: Iterable[str],
               viewed: Mapping[str, ReplicaView],
               address_of: Callable[[str], str | None]) -> list[CheckTarget]:
        """The checks now: `periods` gives each deployment's (period, timeout); `views`
        every replica as the pass viewed it, `reviewed` the ids viewed again since the
        last update (`viewed`: their views); `address_of` a connected replica's address
        (None: not connected)."""
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
            address = address_of(v.replica_id)
            period = periods.get((v.app, v.deployment))
            if (v.state == "RUNNING" and not v.stopping and address is not None
                    and period is not None):
                self._checks[v.replica_id] = CheckTarget(v.replica_id, address, *period)
            else:
                self._checks.pop(v.replica_id, None)
        return list(self._checks.values())
