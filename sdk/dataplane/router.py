"""Per-caller routing to one deployment's replicas: power of two choices with a bounded queue.

Used by the proxy (one caller) and by every DeploymentHandle (another caller), as in Ray
Serve: `max_queued_requests` bounds each caller's own queue, not a global one.

The choice is a pure function (`choose_replica`) over plain slots; `DeploymentRouter` adds
the asyncio waiting around it. A request is admitted when a replica below
max_ongoing_requests (by this caller's own count of in-flight calls) is free; otherwise it
waits in a FIFO queue; when the queue already holds max_queued_requests, it is shed at once
with BackPressureError. A replica that refuses a call (at capacity because of other callers,
or draining) is skipped briefly and the call goes elsewhere: it never started, so that retry
is safe.

A call for a multiplexed model (`model_id`) is offered only the replicas
`weir.dataplane.model_affinity` names for it: those holding the model first.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from weir.cancellation import event_within
from weir.dataplane.model_affinity import (
    MODEL_MATCH_WAIT_S,
    model_candidates,
    refresh_sent,
    remember_sent,
)
from weir.exceptions import BackPressureError, DeploymentUnavailableError

#: How long a replica that refused a call is skipped before it is tried again.
REJECTED_BACKOFF_S = 0.02
#: How long an unreachable replica is skipped (the route table normally drops it sooner).
UNREACHABLE_BACKOFF_S = 1.0
#: With no deadline, how long a request waits when the deployment has no replica at all.
NO_REPLICA_WAIT_S = 30.0


@dataclass
class ReplicaSlot:
    """A replica as one caller sees it."""

    replica_id: str
    address: str
    #: Ongoing requests the replica last reported (all callers), piggybacked or streamed.
    reported: int = 0
    #: This caller's own calls in flight to it.
    in_flight: int = 0
    #: Monotonic time before which it is skipped (it refused a call or was unreachable).
    skip_until: float = 0.0
    #: It multiplexes models; those it reported holding (loaded or loading).
    multiplexed: bool = False
    models: frozenset[str] = frozenset()
    #: Model id -> monotonic time until which this caller assumes the replica holds it
    #: (it sent a call for it there; `weir.dataplane.model_affinity`).
    sent_models: dict[str, float] = field(default_factory=dict)

    @property
    def load(self) -> int:
        """Estimated queue depth: the larger of what we sent and what it reported."""
        return max(self.in_flight, self.reported)


def choose_replica(
    slots: Sequence[ReplicaSlot], max_ongoing: int, now: float, rng: random.Random
) -> ReplicaSlot | None:
    """Power of two choices: two random replicas below max_ongoing, the less loaded one.

    Returns None when no replica can take a call now.
    """
    free = [s for s in slots if s.in_flight < max_ongoing and s.skip_until <= now]
    if not free:
        return None
    if len(free) == 1:
        return free[0]
    a, b = rng.sample(free, 2)
    return a if a.load <= b.load else b


class _Waiter:
    """A call waiting in a router's queue, and the slot handed to it once one is free."""

    __slots__ = ("event", "model_id", "since", "slot")

    def __init__(self, model_id: str, since: float) -> None:
        self.event = asyncio.Event()
        self.model_id = model_id
        self.since = since
        self.slot: ReplicaSlot | None = None


class DeploymentRouter:
    """One caller's router for one deployment.

    A freed slot is handed to the head of the queue at once (`_wake`), as many as there
    are free slots, rather than waking the head to take one itself: woken heads took the
    slots one event-loop turn after another, so the calls freed by one batch of replies
    went out one by one, each after a turn of the caller's other work (in the proxy, the
    HTTP side of every connection), and the replica sat idle meanwhile.
    """

    def __init__(self, app: str, deployment: str, *, rng: random.Random | None = None,
                 on_queue_change: Callable[[], None] | None = None) -> None:
        self.app = app
        self.deployment = deployment
        #: Called when a request starts or stops waiting (the autoscaler counts them).
        self._on_queue_change = on_queue_change
        self.max_ongoing = 5
        self.max_queued = -1
        self._slots: dict[str, ReplicaSlot] = {}
        #: The slots in the order the last `update` listed the replicas (`set_reported`).
        self._ordered: list[ReplicaSlot] = []
        self._waiters: deque[_Waiter] = deque()
        self._rng = rng or random.Random()
        self.known = False
        #: The deployment left the route table (deleted): calls fail at once.
        self.removed = False

    @property
    def num_queued(self) -> int:
        """Requests of this caller waiting for a replica."""
        return len(self._waiters)

    def update(
        self, max_ongoing: int, max_queued: int, replicas: Iterable[tuple[str, str, int]],
        models: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        """Take a new replica list `(replica_id, address, reported_ongoing)` from the table,
        and the multiplexed models each multiplexing replica holds (`models`, by replica id;
        a replica absent from it does not multiplex)."""
        self.known = True
        self.removed = False
        self.max_ongoing = max(1, max_ongoing)
        self.max_queued = max_queued
        fresh: dict[str, ReplicaSlot] = {}
        now = time.monotonic()
        for replica_id, address, ongoing in replicas:
            slot = self._slots.get(replica_id)
            if slot is None or slot.address != address:
                slot = ReplicaSlot(replica_id, address)
            slot.reported = ongoing
            held = models.get(replica_id) if models else None
            slot.multiplexed = held is not None
            slot.models = frozenset(held) if held else frozenset()
            refresh_sent(slot, now)
            fresh[replica_id] = slot
        self._slots = fresh
        self._ordered = list(fresh.values())
        self._wake()

    def set_reported(self, loads: Iterable[tuple[int, int]]) -> None:
        """Take the new reported load of some replicas, `(position, ongoing)`, a position
        being the replica's place in the list the last `update` took, the table having
        changed nothing else of the deployment (`weir.dataplane.route_delta.TableChange`):
        what `update` would do for them, without rebuilding every slot (9 ms per load
        version at 10,000 replicas). Raises IndexError for a position past that list."""
        ordered = self._ordered
        for position, ongoing in loads:
            ordered[position].reported = ongoing
        self._wake()

    def remove(self) -> None:
        """The deployment is gone from the route table: fail every waiting call."""
        self.removed = True
        self._slots = {}
        self._ordered = []
        for waiter in self._waiters:
            waiter.event.set()

    def would_shed(self) -> bool:
        """Whether a new call would be shed now (as `assign` would): for a proxy to refuse
        before it reads the body or builds anything for the call."""
        if self.max_queued < 0 or len(self._waiters) < self.max_queued:
            return False
        if self._waiters:
            return True
        now = time.monotonic()
        return not any(s.in_flight < self.max_ongoing and s.skip_until <= now
                       for s in self._slots.values())

    def _check_removed(self) -> None:
        if self.removed:
            raise DeploymentUnavailableError(
                f"deployment {self.deployment!r} of application {self.app!r} was deleted")

    def _wake(self) -> None:
        # FIFO: the head first; a head no replica can take now (its model's replicas are
        # full, say) keeps its place and the rest wait behind it, as before.
        waiters = self._waiters
        while waiters:
            head = waiters[0]
            slot = self._take(head.model_id, head.since)
            if slot is None:
                return
            waiters.popleft()
            head.slot = slot
            head.event.set()

    def _take(self, model_id: str = "", since: float = 0.0) -> ReplicaSlot | None:
        now = time.monotonic()
        slots: Sequence[ReplicaSlot] = list(self._slots.values())
        if model_id:
            slots = model_candidates(slots, model_id, self.max_ongoing, now,
                                     matching=now - since < MODEL_MATCH_WAIT_S)
        slot = choose_replica(slots, self.max_ongoing, now, self._rng)
        if slot is not None:
            slot.in_flight += 1
            if model_id:
                remember_sent(slot, model_id, now)
        return slot

    async def assign(self, deadline: float | None, *, retry: bool = False,
                     model_id: str = "") -> ReplicaSlot:
        """Wait for a replica with room; shed at once when this caller's queue is full.

        `deadline` is on the `time.monotonic()` clock. A `retry` (the previous replica refused
        or could not be reached) was admitted already: it is never shed and waits at the head
        of the queue. A call for a multiplexed model (`model_id`) prefers the replicas holding
        it (`weir.dataplane.model_affinity`). Raises BackPressureError or
        DeploymentUnavailableError (deadline passed while waiting).
        """
        self._check_removed()
        since = time.monotonic()
        queue_full = not retry and 0 <= self.max_queued <= len(self._waiters)
        if not self._waiters:
            slot = self._take(model_id, since)
            if slot is None and model_id and queue_full:
                # No room to wait for a busy replica holding the model: any replica will do.
                slot = self._take(model_id, since - MODEL_MATCH_WAIT_S)
            if slot is not None:
                return slot
        if queue_full:
            raise BackPressureError(
                num_queued_requests=len(self._waiters), max_queued_requests=self.max_queued
            )
        if deadline is None and not self._slots:
            deadline = time.monotonic() + NO_REPLICA_WAIT_S
        waiter = _Waiter(model_id, since)
        if retry:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        self._queue_changed()
        try:
            while True:
                self._check_removed()
                if waiter.slot is None and self._waiters[0] is waiter:
                    # Time alone may free a slot (a skipped replica's skip ends; a model
                    # match stops being required): the head polls for those.
                    waiter.slot = self._take(model_id, since)
                if waiter.slot is not None:
                    slot, waiter.slot = waiter.slot, None
                    return slot
                waiter.event.clear()
                wait = self._poll_interval(deadline,
                                           since + MODEL_MATCH_WAIT_S if model_id else None)
                await event_within(waiter.event, wait)
                if waiter.slot is None and deadline is not None and time.monotonic() >= deadline:
                    raise DeploymentUnavailableError(
                        f"no replica of deployment {self.deployment!r} in application "
                        f"{self.app!r} became available in time"
                        + ("" if self._slots else " (it has no running replica)")
                    )
        finally:
            if waiter.slot is not None:
                # Handed a slot it will not use (cancelled, or the deployment removed).
                waiter.slot.in_flight = max(0, waiter.slot.in_flight - 1)
                waiter.slot = None
            with contextlib.suppress(ValueError):  # not there once handed a slot
                self._waiters.remove(waiter)
            self._queue_changed()
            self._wake()

    def _queue_changed(self) -> None:
        if self._on_queue_change is not None:
            self._on_queue_change()

    def _poll_interval(self, deadline: float | None,
                       matched_until: float | None = None) -> float | None:
        now = time.monotonic()
        waits = [s.skip_until - now for s in self._slots.values() if s.skip_until > now]
        if deadline is not None:
            waits.append(deadline - now)
        if matched_until is not None and matched_until > now:
            waits.append(matched_until - now)  # then the call may go to any replica
        if not self._slots:
            waits.append(0.5)
        return max(0.0, min(waits)) if waits else None

    def release(self, slot: ReplicaSlot, *, reported: int | None = None,
                skip_for: float = 0.0, model_id: str = "") -> None:
        """A call to `slot` ended: free its place, note the replica's reported load, and
        optionally skip the replica for `skip_for` seconds (it refused or was unreachable:
        then it did not load the call's `model_id` either)."""
        slot.in_flight = max(0, slot.in_flight - 1)
        if reported is not None:
            slot.reported = reported
        if skip_for:
            slot.skip_until = time.monotonic() + skip_for
            slot.sent_models.pop(model_id, None)
            # The call is retried at once (the data plane's rule), at the head of the queue:
            # nothing is handed over here, the head only looks again (another replica may
            # be free) and takes its turn behind the retry.
            if self._waiters:
                self._waiters[0].event.set()
            return
        self._wake()
