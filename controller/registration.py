"""A replica registering with the leader: adopted by its record, and told what to do first.

Design. A replica's session opens with a report; the leader adopts the replica if a record
names it (read from etcd if the watch has not brought it yet: a record written since the
last pass), and writes the replica's pid into its record if it changed (a new process, or
the first registration since its launch). Those writes go out together
(`weir.controller.record_writer`): at a failover every replica registers at once. The
first commands (`first_commands`) are a pure function of the report, what the replica is
to run and whether it is being stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from weir.controller.record_writer import RecordWriter
from weir.controller.replica_records import ReplicaRecords
from weir.etcd.keys import REPLICAS_PREFIX
from weir.etcd.records import ReplicaRecord
from weir.etcd.store import Store
from weir.protos import weir_pb2 as pb


def first_commands(first: pb.ReplicaReport, spec: dict[str, Any] | None,
                   stopping: bool) -> list[pb.ReplicaCommand]:
    """What a registering replica must do first: a replica just launched (no version yet,
    STARTING) is told what to run (INIT with `spec`), or to stop if its version is no
    longer wanted (`spec` None); one being stopped (`stopping`) is told so again. Pure."""
    commands = []
    if not first.version and first.state == pb.STARTING:
        commands.append(
            pb.ReplicaCommand(kind=pb.STOP, graceful_shutdown_timeout_s=5) if spec is None
            else pb.ReplicaCommand(kind=pb.INIT, spec_json=json.dumps(spec)))
    if stopping:
        commands.append(pb.ReplicaCommand(kind=pb.STOP))
    return commands


class Registration:
    """Adopts registering replicas for one term: `spec_for` says what a record's replica
    runs (None: its version is no longer wanted), `stopping` whether a replica is being
    stopped."""

    def __init__(self, store: Store, replica_records: ReplicaRecords, writer: RecordWriter,
                 spec_for: Callable[[ReplicaRecord], dict[str, Any] | None],
                 stopping: Callable[[str], bool]) -> None:
        self._store = store
        self._records = replica_records
        self._writer = writer
        self._spec_for = spec_for
        self._stopping = stopping

    async def admit(self, first: pb.ReplicaReport) -> list[pb.ReplicaCommand] | None:
        """Adopt the replica `first` registers by its record; its first commands, or None
        if no record names it (it is told to stop)."""
        replica_id = first.replica_id
        record = self._records.records.get(replica_id)
        if record is None:
            # Written after this pass's records were read (the watch brings it soon).
            kv = await self._store.get(REPLICAS_PREFIX + replica_id)
            if kv is None:
                return None
            record = ReplicaRecord.from_bytes(kv.value)
            self._records.put(record, kv.mod_revision)
        if record.pid != first.pid:
            # Written with the other registrations of the moment, in one transaction; the
            # reply waits until it is durable.
            await self._writer.put(replace(record, pid=first.pid))
        spec = (self._spec_for(record)
                if not first.version and first.state == pb.STARTING else None)
        return first_commands(first, spec, self._stopping(replica_id))
