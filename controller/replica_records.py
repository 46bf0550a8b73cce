"""The replica records, kept current from a watch of `/weir/replicas/` between full reads.

Design. At thousands of replicas, reading every record from etcd and parsing its JSON on
every reconcile pass (twice a second) was a fifth of the leader's time. `ReplicaRecords`
keeps them instead: a full read once (`load`), then each change from the watch (`apply`),
and the leader's own writes as it makes them (`put`, `delete`, with the revision etcd gave
them, so the watch's later echo of an older write cannot bring back a record the leader
already deleted). Correctness stays level-triggered: the leader still reads everything
every few seconds, and `load` makes the cache agree with that read (a change the watch
missed is caught there), while parsing only the records whose revision changed.

Every record carries the revision of its last write, and the newer side wins: an event or
a read never overwrites what the cache holds at a later revision. The records are also
indexed by deployment, and the replicas whose records changed are collected until the
leader takes them (`take_changed`). Pure bookkeeping: the I/O (the read, the watch) is the
caller's.
"""

from __future__ import annotations

from collections.abc import Iterable

from weir.etcd.keys import REPLICAS_PREFIX
from weir.etcd.records import ReplicaRecord
from weir.etcd.store import KeyValue, WatchEvent

Key = tuple[str, str]


class ReplicaRecords:
    """Every replica record by id and by deployment, each with the revision it was read at."""

    def __init__(self) -> None:
        #: Replica id -> its record (shared with the leader's `ClusterGoal.records`).
        self.records: dict[str, ReplicaRecord] = {}
        #: (app, deployment) -> its records by replica id.
        self.by_deployment: dict[Key, dict[str, ReplicaRecord]] = {}
        #: The revision the cache is known current to (its last full read or event).
        self.revision = 0
        self._revisions: dict[str, int] = {}
        #: Replica id -> the revision of its deletion: an older put seen later is stale.
        self._deleted: dict[str, int] = {}
        self._changed: dict[str, Key] = {}
        #: The revision of the last event from the watch (None: no watch feeds this).
        self._watched: int | None = None

    def __len__(self) -> int:
        return len(self.records)

    def take_changed(self) -> dict[str, Key]:
        """The replicas whose records changed (written, deleted) since the last call, with
        their deployments."""
        changed, self._changed = self._changed, {}
        return changed

    def of(self, key: Key) -> dict[str, ReplicaRecord]:
        """The records of one deployment, by replica id (empty if it has none)."""
        return self.by_deployment.get(key, {})

    # ------------------------------------------------------------------ changes

    def put(self, record: ReplicaRecord, revision: int) -> bool:
        """`record` as written at `revision`; False (and no change) if the cache holds a
        later write of it, or its deletion at a later revision."""
        rid = record.replica_id
        if (self._revisions.get(rid, 0) >= revision
                or self._deleted.get(rid, 0) >= revision):
            return False
        self._deleted.pop(rid, None)
        self._store(record, revision)
        return True

    def delete(self, replica_id: str, revision: int) -> bool:
        """The record of `replica_id` deleted at `revision`; False if it was written after."""
        if self._revisions.get(replica_id, 0) > revision:
            return False
        self._deleted[replica_id] = max(revision, self._deleted.get(replica_id, 0))
        self._drop(replica_id)
        return True

    def apply(self, event: WatchEvent) -> bool:
        """One change from the watch of REPLICAS_PREFIX; whether the cache changed. A
        "reset" changes nothing: the caller must `load` a full read."""
        if event.kind == "reset" or not event.key.startswith(REPLICAS_PREFIX):
            return False
        self.revision = max(self.revision, event.revision)
        self._watched = event.revision
        rid = event.key[len(REPLICAS_PREFIX):]
        if event.kind == "delete":
            return self.delete(rid, event.revision)
        if (self._revisions.get(rid, 0) >= event.revision
                or self._deleted.get(rid, 0) >= event.revision):
            return False  # parse nothing stale
        return self.put(ReplicaRecord.from_bytes(event.value), event.revision)

    def load(self, items: Iterable[KeyValue], revision: int) -> bool:
        """Agree with a full read of REPLICAS_PREFIX made at `revision`: records it has at a
        later revision than the cache are taken (parsed only then), records it lacks that
        the cache holds from before it are dropped, writes after it are kept.

        A read of keys only (values b"") does as much when it has no record to take;
        if it has one, nothing changes and this is False: read the values."""
        seen = set()
        newer = []
        for kv in items:
            rid = kv.key[len(REPLICAS_PREFIX):]
            seen.add(rid)
            if (self._revisions.get(rid, 0) < kv.mod_revision
                    and self._deleted.get(rid, 0) < kv.mod_revision):
                if not kv.value:  # a record is never empty: a read of keys only
                    return False
                newer.append((rid, kv))
        for rid, kv in newer:
            self._deleted.pop(rid, None)
            self._store(ReplicaRecord.from_bytes(kv.value), kv.mod_revision)
        for rid in [r for r, rev in self._revisions.items() if r not in seen and rev <= revision]:
            self._drop(rid)
        # A deletion the read reflects needs its tombstone no more, unless a watch behind
        # the read may still deliver an older put of the record: keep those.
        horizon = revision if self._watched is None else min(revision, self._watched)
        self._deleted = {r: rev for r, rev in self._deleted.items() if rev > horizon}
        self.revision = max(self.revision, revision)
        return True

    # ------------------------------------------------------------------ internals

    def _store(self, record: ReplicaRecord, revision: int) -> None:
        rid, key = record.replica_id, (record.app, record.deployment)
        old = self.records.get(rid)
        if old is not None and (old.app, old.deployment) != key:
            self._drop(rid)
        self.records[rid] = record
        self._revisions[rid] = revision
        self.by_deployment.setdefault(key, {})[rid] = record
        self._changed[rid] = key

    def _drop(self, replica_id: str) -> None:
        record = self.records.pop(replica_id, None)
        self._revisions.pop(replica_id, None)
        if record is None:
            return
        key = (record.app, record.deployment)
        group = self.by_deployment.get(key)
        if group is not None:
            group.pop(replica_id, None)
            if not group:
                del self.by_deployment[key]
        self._changed[replica_id] = key
