"""The etcd store: the one door between Weir and a real etcd.

:class:`EtcdStore` implements :class:`~weir.etcd.store.Store`, the interface the rest of
Weir is written against (its in-process twin is :mod:`weir.etcd.memory_store`).

Why aetcd, and what Weir adds
-----------------------------
Weir's durable state (goal configs, their history, the leader lease, replica records)
lives in etcd. The client is ``aetcd`` 1.0.0: asyncio-native, and the only maintained
heir of python-etcd3 that imports beside protobuf >= 4 (``etcd3`` cannot, ``etcd3aio``
retries non-idempotent calls and cannot be imported beside aetcd). aetcd is a thin
wrapper over etcd's gRPC API; what a control plane needs on top of it lives in one
module each:

* **Several endpoints, channel options, TLS**: :mod:`weir.etcd.endpoints`.
* **Short call timeouts** (1 s by default) so a call stuck on a dead member fails fast
  and the caller's next attempt lands elsewhere.
* **One channel, closed for good, and errors as values users act on** (every aetcd and
  gRPC failure becomes a :class:`~weir.etcd.store.StoreError` naming etcd and its
  endpoints): :mod:`weir.etcd.etcd_connection`, by the rules of
  :mod:`weir.etcd.etcd_failures`. No aetcd type leaves the store.
* **A lease keep-alive task** (aetcd has none): :mod:`weir.etcd.etcd_keep_alive`.
* **A watch that survives failures**: :mod:`weir.etcd.etcd_watch`.
* **Reads at a revision** (config history) and **multi-key guarded commits**, built here
  from etcd's own requests where aetcd has no helper.

Writes are never retried: after a timeout a write may or may not have been applied, and
only the caller (a level-triggered reconcile loop) knows whether re-doing it is safe.
Reads are retried once when the connection failed, since a read is always safe to repeat.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aetcd.rpc
import grpc
import grpc.aio

from weir.etcd.endpoints import TLSConfig, parse_endpoints
from weir.etcd.etcd_connection import EtcdClient, EtcdConnection
from weir.etcd.etcd_keep_alive import keep_lease_alive_apart
from weir.etcd.etcd_watch import watch_prefix
from weir.etcd.store import (
    KeyValue,
    Lease,
    Store,
    StoreError,
    WatchEvent,
    commit_operation,
)

__all__ = ["EtcdStore"]


class EtcdStore:
    """:class:`~weir.etcd.store.Store` over a real etcd.

    ``endpoints``: ``"host:port"``, optionally ``"http://host:port"`` (``https://``
    turns TLS on with the system roots unless ``tls`` says more), several
    comma-separated or as a list. ``timeout`` bounds every call, in seconds.

    Connecting opens a gRPC channel without contacting etcd; an unreachable etcd shows
    on the first call as :class:`StoreUnavailableError`.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float = 1.0,
        tls: TLSConfig | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        addresses, secure = parse_endpoints(endpoints)
        tls = tls if tls is not None else (TLSConfig.from_environ()
                                           or (TLSConfig() if secure else None))
        self._etcd = EtcdConnection(addresses, timeout=timeout, tls=tls)
        # The loop keeps only weak references to tasks: hold the keep-alives here so a
        # caller that drops the returned task does not lose its lease to the GC.
        self._keep_alives: set[asyncio.Task[None]] = set()

    @property
    def endpoints(self) -> list[str]:
        """The endpoints as ``"host:port"`` strings."""
        return list(self._etcd.endpoints)

    @property
    def timeout(self) -> float:
        """The per-call timeout in seconds."""
        return self._etcd.timeout

    def __repr__(self) -> str:
        return f"EtcdStore({self._etcd.where!r})"

    # -- connection ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the channel to etcd (idempotent). Does not wait for etcd to answer."""
        await self._etcd.connect()

    async def close(self) -> None:
        """Close the channel; watches end, keep-alive tasks report their lease lost.

        Leases are not revoked: they expire after their TTL, as if this process died.
        """
        await self._etcd.close()

    async def __aenter__(self) -> EtcdStore:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- keys --------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        """The key's value and revisions, or ``None`` if it does not exist."""
        result = await self._etcd.read(f"get {key}", lambda c: c.get(key.encode()))
        return None if result is None else _key_value(result)

    async def get_prefix(self, prefix: str, *, keys_only: bool = False
                         ) -> tuple[list[KeyValue], int]:
        """Every key starting with ``prefix`` sorted by key, and the revision of the read.

        Watching from that revision + 1 misses nothing that happened after the read.
        """
        result = await self._etcd.read(
            f"get prefix {prefix}",
            lambda c: c.get_prefix(prefix.encode(), sort_order="ascend", sort_target="key",
                                   keys_only=keys_only),
        )
        return [_key_value(kv) for kv in result], int(result.header.revision)

    async def get_at_revision(self, key: str, revision: int) -> KeyValue | None:
        """The key as it was at ``revision`` (``None`` if absent then).

        Raises :class:`StoreError` if etcd compacted that revision away, or if it lies
        in the future.
        """
        request = aetcd.rpc.RangeRequest(key=key.encode(), revision=revision)
        operation = f"get {key} at revision {revision}"

        async def call(client: EtcdClient) -> Any:
            return await client.kvstub.Range(
                request, timeout=self._etcd.timeout, metadata=client.metadata
            )

        try:
            response = await self._etcd.read(operation, call)
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, grpc.aio.AioRpcError) and (
                cause.code() == grpc.StatusCode.OUT_OF_RANGE
            ):
                details = str(cause.details())
                hint = (
                    "etcd keeps history only back to its last compaction"
                    if "compacted" in details
                    else "that revision does not exist yet"
                )
                raise StoreError(
                    f"etcd at {self._etcd.where} cannot {operation}: {details} ({hint})"
                ) from cause
            raise
        if not response.kvs:
            return None
        return _key_value(response.kvs[0])

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        """Set ``key`` to ``value`` (bound to ``lease`` if given); return the new revision."""
        client = await self._etcd.ready()
        with self._etcd.errors(f"put {key}"):
            result = await client.put(key.encode(), value, lease=_lease_id(lease))
        return int(result.header.revision)

    async def delete(self, key: str) -> bool:
        """Delete ``key``; ``True`` if it existed."""
        client = await self._etcd.ready()
        with self._etcd.errors(f"delete {key}"):
            result = await client.delete(key.encode())
        return result is not None

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; return how many there were."""
        client = await self._etcd.ready()
        with self._etcd.errors(f"delete prefix {prefix}"):
            result = await client.delete_prefix(prefix.encode())
        return int(result.deleted)

    async def create_if_absent(self, key: str, value: bytes, *, lease: Lease | None = None) -> bool:
        """Create ``key`` only if it does not exist (one transaction on create_revision 0).

        Returns whether this call created it.
        """
        client = await self._etcd.ready()
        tx = client.transactions
        with self._etcd.errors(f"create {key}"):
            succeeded, _ = await client.transaction(
                compare=[tx.create(key.encode()) == 0],
                success=[tx.put(key.encode(), value, lease=_lease_id(lease))],
                failure=[],
            )
        return bool(succeeded)

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
        rpc = aetcd.rpc
        # Built from etcd's messages: aetcd's transaction() hides the response header,
        # and with it the revision we return.
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=k.encode(),
                    target=rpc.Compare.MOD,
                    result=rpc.Compare.EQUAL,
                    mod_revision=int(n),
                )
                for k, n in expect_mod_revision.items()
            ],
            success=[
                *(
                    rpc.RequestOp(request_put=rpc.PutRequest(key=k.encode(), value=v))
                    for k, v in puts.items()
                ),
                *(
                    rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k.encode()))
                    for k in deletes
                ),
            ],
        )
        client = await self._etcd.ready()
        with self._etcd.errors(operation):
            response = await client.kvstub.Txn(
                request, timeout=self._etcd.timeout, metadata=client.metadata
            )
        return int(response.header.revision) if response.succeeded else None

    # -- leases ------------------------------------------------------------------------------

    async def grant_lease(self, ttl: float) -> Lease:
        """A new lease of ``ttl`` seconds (rounded up; etcd may raise it to its minimum)."""
        seconds = max(1, math.ceil(ttl))
        client = await self._etcd.ready()
        with self._etcd.errors(f"grant a {seconds} s lease"):
            granted = await client.lease(seconds)
        return Lease(id=int(granted.id), ttl=int(granted.ttl))

    async def revoke_lease(self, lease: Lease) -> None:
        """Revoke ``lease`` now, deleting its keys. A lease already gone is no error."""
        client = await self._etcd.ready()
        try:
            with self._etcd.errors(f"revoke lease {lease.id:x}"):
                await client.revoke_lease(lease.id)
        except StoreError as exc:
            if "lease not found" not in str(exc):
                raise

    def keep_alive(self, lease: Lease, on_lost: Callable[[], None]) -> asyncio.Task[None]:
        """Refresh ``lease`` every TTL/3, in a thread of its own (nothing on the running
        loop can delay a refresh: :func:`~weir.etcd.etcd_keep_alive.keep_lease_alive_apart`),
        until the returned task of the running loop is cancelled.

        If no refresh succeeded for a whole TTL (etcd away), or etcd says the lease is
        gone, ``on_lost()`` is called once and the task ends. Cancel the task to stop
        refreshing (the lease then expires after its TTL).
        """
        task = asyncio.get_running_loop().create_task(
            keep_lease_alive_apart(self._etcd, lease, on_lost),
            name=f"weir-lease-keepalive-{lease.id:x}",
        )
        self._keep_alives.add(task)
        task.add_done_callback(self._keep_alives.discard)
        return task

    # -- watches -----------------------------------------------------------------------------

    def watch_prefix(
        self, prefix: str, start_revision: int | None = None
    ) -> AsyncGenerator[WatchEvent, None]:
        """Yield every change under ``prefix`` from ``start_revision`` (default: now on),
        resuming after failures without losing or repeating one, until the store is
        closed (see :func:`weir.etcd.etcd_watch.watch_prefix`)."""
        return watch_prefix(self._etcd, prefix, start_revision)


def _key_value(kv: Any) -> KeyValue:
    return KeyValue(
        key=bytes(kv.key).decode(),
        value=bytes(kv.value),
        mod_revision=int(kv.mod_revision),
        create_revision=int(kv.create_revision),
        lease=int(getattr(kv, "lease", 0) or 0),
        version=int(kv.version),
    )


def _lease_id(lease: Lease | None) -> int | None:
    return None if lease is None else lease.id


if TYPE_CHECKING:
    # mypy holds the class to the interface here, not only where one is passed as a Store.
    _IS_A_STORE: type[Store] = EtcdStore
