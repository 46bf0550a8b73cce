"""An etcd in memory: the :class:`~weir.etcd.store.Store` interface in one process.

Why
---
The election, presence and the controller's loops are written against
:class:`~weir.etcd.store.Store`. On :class:`MemoryStore` they run without an etcd process,
and time is read from an injected clock (a :class:`ManualClock` in tests), so a test makes
a lease expire by moving the clock instead of sleeping out its TTL. It is only worth
having if it behaves as etcd does: ``tests/sdk/etcd/test_store_contract.py`` runs the
same cases on it and on a real etcd.

What it models (etcd 3.5 with default settings)
-----------------------------------------------
* One global revision, 1 when empty, bumped once per transaction that changes something
  (a put always does; deleting an absent key, a failed guard or an empty lease do not).
  Per key: ``create_revision``, ``mod_revision`` and ``version``, forgotten on delete.
* Leases of whole seconds, at least etcd's minimum of 2 s. One expires a TTL after its
  last refresh, deleting its keys in one revision that watches see. While a keep-alive
  task of an open store runs, its lease is refreshed continuously.
* etcd away (:meth:`MemoryStore.set_available`): every call fails with
  :class:`~weir.etcd.store.StoreUnavailableError`, as the etcd store's calls fail when no
  member answers; a keep-alive reports its lease lost once etcd was away for a whole TTL
  of it; no lease expires meanwhile, and each gets a full TTL again when etcd returns (an
  etcd member that becomes leader does the same). Watches wait and resume.
* History: every change is kept for :meth:`~MemoryStore.get_at_revision` and for watches
  from a past revision, until :meth:`MemoryStore.compact`; a watch that needed what was
  compacted gets a ``"reset"`` event, as from the etcd store.
* Several processes: :meth:`MemoryStore.peer` is another client of the same etcd, closed
  on its own (closing one is how a test kills a process: its leases expire a TTL later).

A clock a test moves wakes nobody by itself, so the tasks that wait for time to pass
(watches, keep-alives) look at the clock every 10 ms of real time besides
waking on every change, and every call applies the expiries due before it acts.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING

import structlog

from weir.etcd.memory_etcd import WHERE, LeaseState, MemoryEtcd
from weir.etcd.store import (
    KeyValue,
    Lease,
    Store,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    WatchEvent,
    commit_operation,
    report_lease_lost,
)

__all__ = ["ManualClock", "MemoryStore"]

log = structlog.get_logger("weir.etcd.memory_store")

#: etcd's smallest lease TTL with its default heartbeat (100 ms) and election (1 s) times.
_MIN_TTL = 2


class ManualClock:
    """A clock that moves only when told: pass it as ``clock=`` and call :meth:`advance`."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        if seconds < 0:
            raise ValueError(f"a clock only moves forward, not by {seconds!r} s")
        self._now += seconds


class MemoryStore:
    """:class:`~weir.etcd.store.Store` over an etcd held in this process.

    ``clock`` gives the time leases expire by (seconds, e.g. a :class:`ManualClock`);
    ``timeout`` is only reported, as calls never wait.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, timeout: float = 1.0
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self._etcd = MemoryEtcd(clock)
        self._timeout = timeout
        self._closed = False
        # The loop keeps only weak references to tasks: hold the keep-alives here, with
        # the lease each keeps, so closing can stop them refreshing at once.
        self._keep_alives: dict[asyncio.Task[None], int] = {}

    def peer(self) -> MemoryStore:
        """Another client of the same etcd, as a second process would hold."""
        peer = MemoryStore(clock=self._etcd.clock, timeout=self._timeout)
        peer._etcd = self._etcd
        return peer

    @property
    def timeout(self) -> float:
        """The per-call timeout in seconds."""
        return self._timeout

    @property
    def revision(self) -> int:
        """etcd's current revision (for tests; it reads without a call)."""
        return self._etcd.revision

    def __repr__(self) -> str:
        return f"MemoryStore(revision={self._etcd.revision})"

    # -- what a test does to etcd ------------------------------------------------------------

    def set_available(self, available: bool, *, failover: bool = False) -> None:
        """Take etcd away (every call fails) or bring it back, for every peer.

        ``failover=True``: calls fail as while etcd elects a leader, which passes soon
        (see :func:`~weir.etcd.store.in_failover`), not as when no member answers.
        """
        self._etcd.set_available(available, failover)

    def compact(self, revision: int) -> None:
        """Forget the history before ``revision``, as etcd's compaction does."""
        if revision > self._etcd.revision:
            raise StoreError(f"etcd at {WHERE} cannot compact to future revision {revision}")
        if revision <= self._etcd.compacted:
            raise StoreError(f"etcd at {WHERE} already compacted past revision {revision}")
        self._etcd.compact(revision)

    # -- connection --------------------------------------------------------------------------

    async def connect(self) -> None:
        """Nothing to open; fails only if the store was closed."""
        if self._closed:
            raise StoreClosedError(f"the store for etcd at {WHERE} is closed")

    async def close(self) -> None:
        """Close: watches end, keep-alive tasks report their lease lost; leases stay."""
        self._closed = True
        for task, lease_id in self._keep_alives.items():
            self._etcd.release(lease_id, task)
        self._etcd.notify()

    async def __aenter__(self) -> MemoryStore:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(self, operation: str) -> MemoryEtcd:
        """What every call does first: let others run, as a round trip would, and check
        that it can reach etcd."""
        await asyncio.sleep(0)
        if self._closed:
            raise StoreClosedError(f"the store for etcd at {WHERE} is closed")
        etcd = self._etcd
        if not etcd.available:
            detail = "etcdserver: no leader" if etcd.failover else "no member answers"
            raise StoreUnavailableError(
                f"etcd at {WHERE} is unreachable: {operation} failed: {detail}",
                failover=etcd.failover,
            )
        etcd.expire()
        return etcd

    # -- keys --------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        """The key's value and revisions, or ``None`` if it does not exist."""
        etcd = await self._call(f"get {key}")
        return etcd.keys.get(key)

    async def get_prefix(self, prefix: str, *, keys_only: bool = False
                         ) -> tuple[list[KeyValue], int]:
        """Every key starting with ``prefix`` sorted by key, and the revision of the read
        (each value ``b""`` with ``keys_only``)."""
        etcd = await self._call(f"get prefix {prefix}")
        items = [replace(kv, value=b"") if keys_only else kv
                 for key, kv in sorted(etcd.keys.items()) if key.startswith(prefix)]
        return items, etcd.revision

    async def get_at_revision(self, key: str, revision: int) -> KeyValue | None:
        """The key as it was at ``revision`` (``None`` if absent then)."""
        operation = f"get {key} at revision {revision}"
        etcd = await self._call(operation)
        if revision <= 0:
            return etcd.keys.get(key)  # etcd reads revision 0 as "now"
        if revision > etcd.revision:
            raise StoreError(
                f"etcd at {WHERE} cannot {operation}: mvcc: required revision is a future "
                "revision (that revision does not exist yet)"
            )
        if revision < etcd.compacted:
            raise StoreError(
                f"etcd at {WHERE} cannot {operation}: mvcc: required revision has been "
                "compacted (etcd keeps history only back to its last compaction)"
            )
        return etcd.at_revision(key, revision)

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        """Set ``key`` to ``value`` (bound to ``lease`` if given); return the new revision."""
        operation = f"put {key}"
        etcd = await self._call(operation)
        return etcd.write([(key, value, etcd.check_lease(lease, operation))], ())

    async def delete(self, key: str) -> bool:
        """Delete ``key``; ``True`` if it existed."""
        etcd = await self._call(f"delete {key}")
        existed = key in etcd.keys
        etcd.write((), [key])
        return existed

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; return how many there were."""
        etcd = await self._call(f"delete prefix {prefix}")
        keys = sorted(key for key in etcd.keys if key.startswith(prefix))
        etcd.write((), keys)
        return len(keys)

    async def create_if_absent(self, key: str, value: bytes, *, lease: Lease | None = None) -> bool:
        """Create ``key`` only if it does not exist; return whether this call created it."""
        operation = f"create {key}"
        etcd = await self._call(operation)
        lease_id = etcd.check_lease(lease, operation)
        if key in etcd.keys:
            return False
        etcd.write([(key, value, lease_id)], ())
        return True

    async def commit(
        self,
        *,
        puts: Mapping[str, bytes] = {},
        deletes: Sequence[str] = (),
        expect_mod_revision: Mapping[str, int] = {},
    ) -> int | None:
        """Apply ``puts`` and ``deletes`` in one transaction if every guard holds; the
        new revision, or ``None`` if a guard failed (see :meth:`Store.commit`)."""
        operation = commit_operation(puts, deletes)
        etcd = await self._call(operation)
        for key, expected in expect_mod_revision.items():
            current = etcd.keys.get(key)
            if (0 if current is None else current.mod_revision) != expected:
                return None
        return etcd.write([(key, value, 0) for key, value in puts.items()], deletes)

    # -- leases ------------------------------------------------------------------------------

    async def grant_lease(self, ttl: float) -> Lease:
        """A new lease of ``ttl`` seconds, rounded up, and at least etcd's minimum (2 s)."""
        seconds = max(_MIN_TTL, math.ceil(ttl))
        etcd = await self._call(f"grant a {seconds} s lease")
        lease_id = next(etcd.lease_ids)
        etcd.leases[lease_id] = LeaseState(ttl=seconds, expires_at=etcd.clock() + seconds)
        return Lease(id=lease_id, ttl=seconds)

    async def revoke_lease(self, lease: Lease) -> None:
        """Revoke ``lease`` now, deleting its keys. A lease already gone is no error."""
        etcd = await self._call(f"revoke lease {lease.id:x}")
        etcd.drop_lease(lease.id)

    def keep_alive(self, lease: Lease, on_lost: Callable[[], None]) -> asyncio.Task[None]:
        """Keep ``lease`` refreshed in a task of the running loop until it is cancelled.

        ``on_lost()`` is called once, ending the task, when the lease is gone, etcd was
        away for a whole TTL, or the store is closed.
        """
        # Counted as refreshing from now on, even before the task first runs.
        since = self._etcd.clock()
        task = asyncio.get_running_loop().create_task(
            self._keep_alive(lease, on_lost, since), name=f"weir-lease-keepalive-{lease.id:x}"
        )
        self._keep_alives[task] = lease.id
        if not self._closed:
            self._etcd.keep(lease.id, task)
        task.add_done_callback(self._keep_alive_done)
        return task

    def _keep_alive_done(self, task: asyncio.Task[None]) -> None:
        lease_id = self._keep_alives.pop(task, None)
        if lease_id is not None:
            self._etcd.release(lease_id, task)

    async def _keep_alive(self, lease: Lease, on_lost: Callable[[], None], since: float) -> None:
        etcd = self._etcd
        while True:
            if self._closed:
                reason = "the store was closed"
                break
            if etcd.away_for(since) >= lease.ttl:
                reason = f"no refresh succeeded for {lease.ttl} s"
                break
            if etcd.available:
                etcd.expire()
                if lease.id not in etcd.leases:
                    reason = "etcd says the lease expired"
                    break
            await etcd.changed()
        report_lease_lost(lease, reason, on_lost, log)

    # -- watches -----------------------------------------------------------------------------

    async def watch_prefix(
        self, prefix: str, start_revision: int | None = None
    ) -> AsyncGenerator[WatchEvent, None]:
        """Yield every change under ``prefix`` from ``start_revision`` (default: now on).

        Waits while etcd is away; if the history needed was compacted it yields a
        ``"reset"`` event and goes on from the current revision. Ends when the store is
        closed.
        """
        etcd = self._etcd
        next_revision = start_revision
        while not self._closed:
            if not etcd.available:
                await etcd.changed()
                continue
            etcd.expire()
            if next_revision is None:
                next_revision = etcd.revision + 1
            if next_revision < etcd.compacted:
                log.warning(
                    "watch history compacted; consumer must re-read",
                    prefix=prefix,
                    wanted=next_revision,
                    current=etcd.revision,
                )
                next_revision = etcd.revision + 1
                yield WatchEvent(kind="reset", key=prefix, value=b"", revision=etcd.revision)
                continue
            events = etcd.events_from(next_revision, prefix)
            if not events:
                await etcd.changed()
                continue
            for event in events:
                if self._closed:
                    return
                next_revision = event.revision + 1
                yield event


if TYPE_CHECKING:
    # mypy holds the class to the interface here, not only where one is passed as a Store.
    _IS_A_STORE: type[Store] = MemoryStore
