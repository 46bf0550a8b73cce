"""The state of an etcd held in memory: keys, revisions, history, leases and outages.

The model behind :class:`~weir.etcd.memory_store.MemoryStore` (whose docstring says what
of etcd is modelled and why). Each client of one etcd holds the same :class:`MemoryEtcd`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from weir.cancellation import within
from weir.etcd.store import KeyValue, Lease, StoreError, WatchEvent

__all__ = ["WHERE", "LeaseState", "MemoryEtcd"]

#: What error messages call this etcd, where the etcd store names its endpoints.
WHERE = "memory"
#: How often (real seconds) a waiting watch or keep-alive looks at the clock.
_POLL = 0.01


@dataclass
class LeaseState:
    """One lease as etcd holds it."""

    ttl: int
    expires_at: float
    keys: set[str] = field(default_factory=set)
    #: The keep-alive tasks refreshing the lease now.
    keepers: set[object] = field(default_factory=set)


class MemoryEtcd:
    """The state one etcd holds, shared by every
    :class:`~weir.etcd.memory_store.MemoryStore` client of it.

    Every method but :meth:`changed` is synchronous: one step of etcd's state machine,
    applied at once, so two clients never interleave inside a transaction.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.revision = 1
        #: Revisions below this one were compacted away.
        self.compacted = 0
        self.keys: dict[str, KeyValue] = {}
        #: Per key, (revision, the key then or None once deleted), oldest first.
        self.history: dict[str, list[tuple[int, KeyValue | None]]] = {}
        #: Every change, in revision order.
        self.log: list[WatchEvent] = []
        self.leases: dict[int, LeaseState] = {}
        self.lease_ids = itertools.count(0x7E1D_0000_0001)
        self.available = True
        self.failover = False
        #: When etcd was away: (since, until or None while it still is).
        self.outages: list[tuple[float, float | None]] = []
        self._waiters: list[asyncio.Future[None]] = []

    # -- writes ------------------------------------------------------------------------------

    def write(self, puts: Iterable[tuple[str, bytes, int]], deletes: Iterable[str]) -> int:
        """Apply ``puts`` (key, value, lease ID) then ``deletes`` as one transaction.

        Returns the revision after it, unchanged if nothing changed.
        """
        puts = list(puts)
        deleting = [key for key in dict.fromkeys(deletes) if key in self.keys]
        if not puts and not deleting:
            return self.revision
        revision = self.revision + 1
        for key, value, lease in puts:
            old = self.keys.get(key)
            self._detach(old)
            kv = KeyValue(
                key=key,
                value=value,
                mod_revision=revision,
                create_revision=revision if old is None else old.create_revision,
                lease=lease,
                version=1 if old is None else old.version + 1,
            )
            self.keys[key] = kv
            if lease:
                self.leases[lease].keys.add(key)
            self.history.setdefault(key, []).append((revision, kv))
            self.log.append(WatchEvent(kind="put", key=key, value=value, revision=revision))
        for key in deleting:
            self._detach(self.keys.pop(key))
            self.history.setdefault(key, []).append((revision, None))
            self.log.append(WatchEvent(kind="delete", key=key, value=b"", revision=revision))
        self.revision = revision
        self.notify()
        return revision

    def _detach(self, kv: KeyValue | None) -> None:
        if kv is not None and kv.lease in self.leases:
            self.leases[kv.lease].keys.discard(kv.key)

    def check_lease(self, lease: Lease | None, operation: str) -> int:
        """The ID to bind a key to (0: none); refuses a lease etcd does not hold, as etcd."""
        if lease is None:
            return 0
        if lease.id not in self.leases:
            raise StoreError(
                f"etcd at {WHERE} refused {operation}: etcdserver: requested lease not found"
            )
        return lease.id

    def drop_lease(self, lease_id: int) -> None:
        """Forget a lease and delete its keys in one transaction (revoke and expiry)."""
        state = self.leases.pop(lease_id, None)
        if state is not None:
            self.write((), sorted(state.keys))

    # -- time --------------------------------------------------------------------------------

    def expire(self) -> None:
        """Refresh the leases being kept alive and drop those whose time is up."""
        if not self.available:
            return  # a stopped etcd expires nothing
        now = self.clock()
        for lease_id, state in sorted(self.leases.items(), key=lambda item: item[1].expires_at):
            if state.keepers:
                state.expires_at = max(state.expires_at, now + state.ttl)
            elif now >= state.expires_at:
                self.drop_lease(lease_id)

    def keep(self, lease_id: int, keeper: object) -> None:
        """Count ``keeper`` as refreshing the lease from now on."""
        self.expire()  # a lease already due is not revived by a late keep-alive
        state = self.leases.get(lease_id)
        if state is not None:
            state.keepers.add(keeper)

    def release(self, lease_id: int, keeper: object) -> None:
        """``keeper`` stopped refreshing the lease (idempotent)."""
        state = self.leases.get(lease_id)
        if state is not None and keeper in state.keepers:
            state.keepers.discard(keeper)
            if not state.keepers:
                # Refreshed continuously until now: a full TTL from here.
                state.expires_at = self.clock() + state.ttl

    def away_for(self, since: float) -> float:
        """The longest time etcd was away after ``since``."""
        now = self.clock()
        longest = 0.0
        for start, until in self.outages:
            end = now if until is None else until
            longest = max(longest, end - max(start, since))
        return longest

    def set_available(self, available: bool, failover: bool) -> None:
        """etcd goes away or comes back; back, it gives every lease a full TTL again."""
        now = self.clock()
        self.failover = failover
        if available and not self.available:
            self.outages[-1] = (self.outages[-1][0], now)
            for state in self.leases.values():
                state.expires_at = max(state.expires_at, now + state.ttl)
        elif not available and self.available:
            self.outages.append((now, None))
        self.available = available
        self.notify()

    # -- history -----------------------------------------------------------------------------

    def at_revision(self, key: str, revision: int) -> KeyValue | None:
        """The key as it was at ``revision`` (the caller checks it is not compacted)."""
        entries = self.history.get(key, [])
        index = bisect.bisect_right(entries, revision, key=lambda entry: entry[0])
        return entries[index - 1][1] if index else None

    def events_from(self, revision: int, prefix: str) -> list[WatchEvent]:
        """The changes under ``prefix`` from ``revision`` on, in revision order."""
        start = bisect.bisect_left(self.log, revision, key=lambda event: event.revision)
        return [event for event in self.log[start:] if event.key.startswith(prefix)]

    def compact(self, revision: int) -> None:
        """Forget the history before ``revision`` (the caller checks it is valid)."""
        for key, entries in list(self.history.items()):
            # Keep the last state at or before `revision`: reads there still need it.
            cut = bisect.bisect_right(entries, revision, key=lambda entry: entry[0]) - 1
            kept = entries[max(cut, 0):]
            if kept and kept[0][1] is None and kept[0][0] <= revision:
                kept = kept[1:]
            if kept:
                self.history[key] = kept
            else:
                del self.history[key]
        self.log = self.log[bisect.bisect_left(self.log, revision, key=lambda e: e.revision):]
        self.compacted = revision
        self.notify()

    # -- waking ------------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake every client waiting in :meth:`changed`."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def changed(self, timeout: float = _POLL) -> None:
        """Return after the next change, or after ``timeout`` (real) seconds."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await within(waiter, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
