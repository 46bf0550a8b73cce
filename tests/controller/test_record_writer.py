"""Registration writes are coalesced: many callers, few transactions, each resumes durable."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from weir.controller.record_writer import RecordWriter, take_batch
from weir.etcd.keys import REPLICAS_PREFIX
from weir.etcd.memory_store import MemoryStore
from weir.etcd.records import ReplicaRecord
from weir.etcd.store import StoreUnavailableError


def record(i: int, pid: int = 0) -> ReplicaRecord:
    return ReplicaRecord(f"app#D#{i}", "app", "D", "v1", pid=pid, started_at=1.0)


def test_a_batch_takes_the_longest_queued_first_up_to_the_limit() -> None:
    queued = {f"r{i}": (record(i), []) for i in range(5)}
    batch = take_batch(queued, 3)  # type: ignore[arg-type]
    assert list(batch) == ["r0", "r1", "r2"]
    assert list(queued) == ["r3", "r4"]
    assert list(take_batch(queued, 3)) == ["r3", "r4"] and queued == {}  # type: ignore[arg-type]


def test_a_burst_of_registrations_is_written_in_few_transactions() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        written: dict[str, int] = {}
        writer = RecordWriter(store, lambda r, rev: written.__setitem__(r.replica_id, rev),
                              per_write=100)
        before = store.revision
        revisions = await asyncio.gather(*(writer.put(record(i, pid=1000 + i))
                                           for i in range(250)))
        assert writer.transactions == 3 and store.revision == before + 3
        # Each caller resumed with its record durable, and the cache was told first.
        for i, revision in enumerate(revisions):
            kv = await store.get(REPLICAS_PREFIX + f"app#D#{i}")
            assert kv is not None and kv.mod_revision == revision
            assert ReplicaRecord.from_bytes(kv.value).pid == 1000 + i
            assert written[f"app#D#{i}"] == revision

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_record_queued_twice_is_written_once_in_its_latest_form() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        writer = RecordWriter(store, lambda r, rev: None)
        first = asyncio.ensure_future(writer.put(record(1, pid=5)))
        second = asyncio.ensure_future(writer.put(record(1, pid=6)))
        assert await first == await second
        assert writer.transactions == 1
        kv = await store.get(REPLICAS_PREFIX + "app#D#1")
        assert kv is not None and ReplicaRecord.from_bytes(kv.value).pid == 6

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_every_caller_of_a_refused_transaction_learns_it_and_later_ones_still_write() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        writer = RecordWriter(store, lambda r, rev: None)
        store.set_available(False)
        results = await asyncio.gather(*(writer.put(record(i)) for i in range(3)),
                                       return_exceptions=True)
        assert all(isinstance(r, StoreUnavailableError) for r in results)
        store.set_available(True)
        assert await writer.put(replace(record(1), pid=9)) > 0

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_stopping_cancels_the_callers_still_waiting() -> None:
    async def scenario() -> None:
        writer = RecordWriter(MemoryStore(), lambda r, rev: None, linger_s=5)
        waiting = asyncio.ensure_future(writer.put(record(1)))
        await asyncio.sleep(0)
        await writer.stop()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(asyncio.wait_for(scenario(), 10))
