"""The store interface: what Weir asks of etcd, and the types both sides speak.

Why an interface
----------------
Weir's durable state (goal configs and their history, the leader lease, replica and
presence records) lives in etcd, and the controller's logic is written against the few
things it asks of etcd: keys with revisions, guarded multi-key commits, leases with a
keep-alive, watches that resume, and reads at a past revision. :class:`Store` names
exactly that, so the code above it can run on two implementations:

* :class:`~weir.etcd.etcd_store.EtcdStore`, the real one (aetcd, several endpoints, TLS);
* :class:`~weir.etcd.memory_store.MemoryStore`, etcd's semantics in one process, on a
  clock a test moves by hand: the election, presence and the controller's loops can be
  tested without an etcd process and without sleeping out lease TTLs.

Both are held to the same behaviour by one contract test
(``tests/sdk/etcd/test_store_contract.py``). The semantics are etcd's: one global
revision, bumped once per write transaction; per key a ``create_revision``, a
``mod_revision`` and a ``version``; a lease deletes its keys when it expires or is
revoked; a watch delivers every change in revision order from the revision asked for.

Errors are values a user can act on: every failure is a :class:`StoreError` whose message
names etcd and where it was looked for. Writes are never retried by a store: after a
timeout a write may or may not have applied, and only the caller knows whether redoing it
is safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol

__all__ = [
    "KeyValue",
    "Lease",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "WatchEvent",
    "commit_operation",
    "in_failover",
    "report_lease_lost",
]


class StoreError(Exception):
    """An etcd operation failed; the message names etcd, its endpoints and the operation."""


class StoreClosedError(StoreError):
    """The store was closed; nothing more can be done with it."""


class StoreUnavailableError(StoreError):
    """etcd could not be reached, or had no leader, within the call timeout.

    Safe to retry for reads; a write that failed this way may or may not have applied.
    ``failover`` tells whether the failure looks like etcd failing over (a call timed out,
    a member has no leader, the connection to one member broke), which passes in a second
    or two, rather than no member answering at all; see :func:`in_failover`.
    """

    def __init__(self, message: str, *, failover: bool = False) -> None:
        super().__init__(message)
        self.failover = failover


def in_failover(exc: StoreError) -> bool:
    """Whether a failure looks like etcd failing over, which passes in a second or two.

    A caller may wait that out for a user; when no member can be reached at all it should
    report the failure at once.
    """
    return isinstance(exc, StoreUnavailableError) and exc.failover


@dataclass(frozen=True)
class KeyValue:
    """One key as etcd holds it."""

    key: str
    value: bytes
    #: The revision of the last write to the key.
    mod_revision: int
    #: The revision that created the key (since it last did not exist).
    create_revision: int
    #: The ID of the lease the key is bound to (0: none).
    lease: int = 0
    #: How many times the key was written since it was created (1 after the first put).
    version: int = 1


@dataclass(frozen=True)
class WatchEvent:
    """A change under a watched prefix.

    ``kind == "reset"`` means the history needed to resume was compacted away: the
    consumer must re-read everything with :meth:`Store.get_prefix`; events after
    ``revision`` follow.
    """

    kind: Literal["put", "delete", "reset"]
    key: str
    value: bytes
    revision: int


@dataclass(frozen=True)
class Lease:
    """An etcd lease: keys put with it vanish when it expires or is revoked."""

    id: int
    ttl: int


def commit_operation(puts: Mapping[str, bytes], deletes: Sequence[str]) -> str:
    """How errors name a :meth:`Store.commit` of ``puts`` and ``deletes``
    (``"commit /a, /b"``), once it is known to be a transaction etcd accepts.

    Raises :class:`ValueError` if a key is both put and deleted: etcd refuses that, so
    both stores refuse it before calling.
    """
    overlap = set(puts) & set(deletes)
    if overlap:
        raise ValueError(f"commit both puts and deletes {sorted(overlap)}; etcd refuses that")
    keys = sorted({*puts, *deletes})
    return f"commit {', '.join(keys) or '(guards only)'}"


def report_lease_lost(lease: Lease, reason: str, on_lost: Callable[[], None], log: Any) -> None:
    """What a keep-alive task of either store does as it ends: say on ``log`` (a structlog
    logger) why ``lease`` is lost, then call ``on_lost()`` once. An exception from the
    callback is logged rather than raised: the task is often never awaited, and an error
    in it would otherwise go unseen."""
    log.warning("lease lost", lease=f"{lease.id:x}", reason=reason)
    try:
        on_lost()
    except Exception:
        log.exception("on_lost callback failed", lease=f"{lease.id:x}")


class Store(Protocol):
    """Async access to etcd for the rest of Weir: everything Weir asks of it.

    A store connects lazily (every call connects first if needed) and, once closed,
    stays closed: calls raise :class:`StoreClosedError`, watches end and keep-alive tasks
    report their lease lost. Leases are not revoked on close: they expire after their
    TTL, as if the process had died.
    """

    @property
    def timeout(self) -> float:
        """The per-call timeout in seconds."""
        ...

    async def connect(self) -> None:
        """Get ready to serve calls (idempotent). Does not wait for etcd to answer."""
        ...

    async def close(self) -> None:
        """Close: watches end, keep-alive tasks report their lease lost."""
        ...

    async def __aenter__(self) -> Store: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    # -- keys --------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        """The key's value and revisions, or ``None`` if it does not exist."""
        ...

    async def get_prefix(self, prefix: str, *, keys_only: bool = False
                         ) -> tuple[list[KeyValue], int]:
        """Every key starting with ``prefix`` sorted by key, and the revision of the read.

        Watching from that revision + 1 misses nothing that happened after the read. With
        ``keys_only`` each value is ``b""`` (the revisions are there): a check of what
        changed costs etcd and the reader no values.
        """
        ...

    async def get_at_revision(self, key: str, revision: int) -> KeyValue | None:
        """The key as it was at ``revision`` (``None`` if absent then).

        Raises :class:`StoreError` if that revision was compacted away, or lies in the
        future.
        """
        ...

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        """Set ``key`` to ``value`` (bound to ``lease`` if given); return the new revision."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete ``key``; ``True`` if it existed."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; return how many there were."""
        ...

    async def create_if_absent(self, key: str, value: bytes, *, lease: Lease | None = None) -> bool:
        """Create ``key`` only if it does not exist (one transaction on create_revision 0).

        Returns whether this call created it.
        """
        ...

    async def commit(
        self,
        *,
        puts: Mapping[str, bytes] = {},
        deletes: Sequence[str] = (),
        expect_mod_revision: Mapping[str, int] = {},
    ) -> int | None:
        """Apply ``puts`` and ``deletes`` in one transaction if every guard holds.

        ``expect_mod_revision[key] == n`` guards on the key's mod_revision being ``n``;
        ``n == 0`` means the key must be absent. Returns the new revision, or ``None``
        (and changes nothing) if a guard failed. Raises :class:`ValueError` if a key is
        both put and deleted.
        """
        ...

    # -- leases ------------------------------------------------------------------------------

    async def grant_lease(self, ttl: float) -> Lease:
        """A new lease of ``ttl`` seconds (rounded up; etcd may raise it to its minimum)."""
        ...

    async def revoke_lease(self, lease: Lease) -> None:
        """Revoke ``lease`` now, deleting its keys. A lease already gone is no error."""
        ...

    def keep_alive(self, lease: Lease, on_lost: Callable[[], None]) -> asyncio.Task[None]:
        """Refresh ``lease`` in a task of the running loop until the task is cancelled.

        If no refresh succeeded for a whole TTL (etcd away), the lease is gone, or the
        store is closed, ``on_lost()`` is called once and the task ends. Cancel the task
        to stop refreshing (the lease then expires after its TTL).
        """
        ...

    # -- watches -----------------------------------------------------------------------------

    def watch_prefix(
        self, prefix: str, start_revision: int | None = None
    ) -> AsyncGenerator[WatchEvent, None]:
        """Yield every change under ``prefix`` from ``start_revision`` (default: now on).

        Changes come in revision order, lease expiries included, none lost or repeated
        while etcd comes and goes. If the history needed was compacted it yields a
        ``"reset"`` event and goes on from the current revision. Ends when the store is
        closed.
        """
        ...
