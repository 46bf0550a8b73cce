"""Replica record writes from registrations, coalesced into few etcd transactions.

Design. A replica's first registration with a leader writes its pid into its record. After
a failover (or a ramp) thousands of replicas register within a second or two; one `put`
each was thousands of etcd round trips, and under load some took longer than the store's
1 s timeout, so those replicas were refused and registered again, which cost more writes.
`RecordWriter.put` instead queues the record and waits: one writer task takes whatever has
queued (after LINGER_S, so that the registrations of one burst meet) and writes up to
RECORDS_PER_WRITE records in one transaction, then the next batch; the records queued
while a transaction is in flight go in the next one. Each caller resumes only once its
record is durable (its revision, or the transaction's error), so a registration is still
answered only after its write.

`take_batch` (which queued records go in the next transaction) is pure; the writer task
is the only I/O.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import structlog

from weir.etcd.keys import REPLICAS_PREFIX
from weir.etcd.records import ReplicaRecord
from weir.etcd.store import Store

log = structlog.get_logger("weir.controller.records")

#: How long the writer waits for more registrations before a transaction: long enough for
#: a burst's registrations to meet, short against a registration's round trip.
LINGER_S = 0.005
#: Records per etcd transaction (etcd refuses more than 128 operations in one).
RECORDS_PER_WRITE = 100

Queued = dict[str, tuple[ReplicaRecord, list[asyncio.Future[int]]]]


def take_batch(queued: Queued, limit: int) -> Queued:
    """Remove and return the first `limit` queued records (in the order they queued: the
    longest waiting go first), each with the callers waiting on it."""
    return {rid: queued.pop(rid) for rid in list(itertools.islice(queued, limit))}


class RecordWriter:
    """Writes replica records for many callers at once (see the module docstring)."""

    def __init__(self, store: Store, on_written: Callable[[ReplicaRecord, int], object], *,
                 linger_s: float = LINGER_S, per_write: int = RECORDS_PER_WRITE) -> None:
        self._store = store
        #: Told each record written, with its revision (before its caller resumes).
        self._on_written = on_written
        self._linger_s = linger_s
        self._per_write = per_write
        self._queued: Queued = {}
        self._task: asyncio.Task[None] | None = None
        #: Transactions made (for tests and the bench).
        self.transactions = 0

    async def put(self, record: ReplicaRecord) -> int:
        """Write `record` with others queued now; its revision once durable. Raises the
        transaction's `StoreError` if etcd refused it. A record queued again before its
        write goes out is written once, in its latest form."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        _, waiting = self._queued.get(record.replica_id, (record, []))
        # Re-inserting keeps its place in the queue: a dict keeps the first insertion order.
        self._queued[record.replica_id] = (record, [*waiting, future])
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._write_queued())
        return await future

    async def stop(self) -> None:
        """Stop writing; callers still waiting are cancelled."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for _, waiting in self._queued.values():
            for future in waiting:
                future.cancel()
        self._queued.clear()

    async def _write_queued(self) -> None:
        await asyncio.sleep(self._linger_s)
        while self._queued:
            batch = take_batch(self._queued, self._per_write)
            try:
                revision = await self._store.commit(puts={
                    REPLICAS_PREFIX + rid: record.to_bytes()
                    for rid, (record, _) in batch.items()})
            except asyncio.CancelledError:
                _fail(batch, None)
                raise
            except Exception as exc:
                # Every caller of this batch learns it (a StoreError: it registers again).
                _fail(batch, exc)
                continue
            self.transactions += 1
            for record, waiting in batch.values():
                self._on_written(record, revision or 0)
                for future in waiting:
                    if not future.done():  # its caller may have given up (hung up)
                        future.set_result(revision or 0)


def _fail(batch: Queued, exc: Exception | None) -> None:
    """End every wait on `batch` with `exc` (None: cancelled)."""
    for _, waiting in batch.values():
        for future in waiting:
            if future.done():
                continue
            if exc is None:
                future.cancel()
            else:
                future.set_exception(exc)
