"""Keeping the replica records for one term: from a watch, read whole every FULL_READ_S,
and the heap frozen as they grow.

Design. Reading and parsing every record on every pass (twice a second) was most of the
leader's etcd traffic and much of its CPU at thousands of replicas, so the records
(`weir.controller.replica_records`) are kept from a watch of REPLICAS_PREFIX, and read
whole only every FULL_READ_S (or on every pass while the watch is down): the check of
what the watch delivered, so the pass stays level-triggered.

The records and the views made from them live as long as the term. Python's full
collections walked all of them (140,000 objects at 5,000 replicas, up to 300 ms in the
middle of a pass), so as the records grow the heap is frozen (`gc.freeze`): what it holds
then is out of the collector's sight. Rarely (`freeze_due`), because a freeze keeps for
good the garbage in cycles not collected yet.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import structlog

from weir.controller.cluster_goal import read_records
from weir.controller.replica_records import ReplicaRecords
from weir.etcd.keys import REPLICAS_PREFIX
from weir.etcd.store import Store

log = structlog.get_logger("weir.controller")

#: How often the pass reads every replica record (between, a watch keeps them): a change
#: the watch missed is caught within this long.
FULL_READ_S = 5.0
#: The heap is frozen again when the records grew by this share (and are this many).
FREEZE_GROWTH = 0.25
FREEZE_MIN_RECORDS = 1000


def freeze_due(records: int, frozen_at: int) -> bool:
    """Whether to freeze the heap now: `records` is at least FREEZE_MIN_RECORDS and
    FREEZE_GROWTH more than when it was last frozen (at `frozen_at`). Rarely, because a
    freeze keeps for good the garbage in cycles not yet collected (a few objects each
    time: the frequent young collections find most of it), and at most about
    log(N) / log(1 + FREEZE_GROWTH) times in a term of N replicas (some 20 to 10,000)."""
    return records >= FREEZE_MIN_RECORDS and records >= frozen_at * (1 + FREEZE_GROWTH)


class RecordKeeper:
    """Keeps `records` up to date for one term of leadership."""

    def __init__(self, store: Store, records: ReplicaRecords,
                 clock: Callable[[], float]) -> None:
        self._store = store
        self._records = records
        self._clock = clock
        #: Whether the watch is running (else every pass reads every record).
        self.watching = False
        self.last_full_read: float | None = None
        #: Whether the last `refresh` read every record.
        self.full_read = True
        #: How many records there were when the heap was last frozen.
        self._frozen_at = 0

    async def load(self) -> int:
        """Read every record; the revision of the read (`watch` from the next one)."""
        revision = await read_records(self._store, self._records)
        self.last_full_read = self._clock()
        self.freeze_if_grown()
        return revision

    async def watch(self, start_revision: int) -> None:
        """Keep the records from the watch, from `start_revision` on, until cancelled."""
        events = self._store.watch_prefix(REPLICAS_PREFIX, start_revision=start_revision)
        self.watching = True
        try:
            async for event in events:
                if event.kind == "reset":  # the history it needed was compacted
                    await read_records(self._store, self._records)
                else:
                    self._records.apply(event)
        finally:
            # Without the watch, every pass reads every record.
            self.watching = False
            await events.aclose()

    async def refresh(self) -> None:
        """Read every record if the watch is not running or the last full read is
        FULL_READ_S old (the level-triggered check of what the watch delivered)."""
        now = self._clock()
        self.full_read = (not self.watching or self.last_full_read is None
                          or now - self.last_full_read >= FULL_READ_S)
        if self.full_read:
            await read_records(self._store, self._records)
            self.last_full_read = now
            self.freeze_if_grown()

    def freeze_if_grown(self) -> None:
        """Move what the process holds now out of the collector's sight (`gc.freeze`) once
        the records grew by FREEZE_GROWTH since the last time (`freeze_due`)."""
        if freeze_due(len(self._records.records), self._frozen_at):
            gc.freeze()
            self._frozen_at = len(self._records.records)
            log.info("froze the heap", replicas=self._frozen_at,
                     frozen_objects=gc.get_freeze_count())
