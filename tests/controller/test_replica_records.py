"""The watch-fed replica record cache, on the in-memory store: it must agree with a full read
whatever the order in which the watch, the leader's own writes and full reads come."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from weir.controller.cluster_goal import read_records
from weir.controller.record_keeper import FULL_READ_S, RecordKeeper
from weir.controller.replica_records import ReplicaRecords
from weir.etcd.keys import REPLICAS_PREFIX
from weir.etcd.memory_store import ManualClock, MemoryStore
from weir.etcd.records import ReplicaRecord
from weir.etcd.store import KeyValue, WatchEvent

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


def record(rid: str, deployment: str = "D", pid: int = 0) -> ReplicaRecord:
    return ReplicaRecord(rid, "app", deployment, "v1", pid=pid, started_at=1.0)


async def put(store: MemoryStore, r: ReplicaRecord) -> int:
    return await store.put(REPLICAS_PREFIX + r.replica_id, r.to_bytes())


async def fed_by_watch(store: MemoryStore, cache: ReplicaRecords, start: int,
                       until: int) -> None:
    """Apply the watch's events from `start` through revision `until`."""
    events = store.watch_prefix(REPLICAS_PREFIX, start_revision=start)
    async for event in events:
        cache.apply(event)
        if event.revision >= until:
            break
    await events.aclose()


def test_the_watch_keeps_the_cache_equal_to_a_full_read() -> None:
    async def scenario() -> None:
        store = MemoryStore(clock=ManualClock())
        cache = ReplicaRecords()
        start = await read_records(store, cache) + 1
        await put(store, record("a"))
        await put(store, record("b", "E"))
        await put(store, record("a", pid=7))
        last = await store.commit(deletes=[REPLICAS_PREFIX + "b"])
        assert last is not None
        await fed_by_watch(store, cache, start, last)
        fresh = ReplicaRecords()
        await read_records(store, fresh)
        assert cache.records == fresh.records == {"a": record("a", pid=7)}
        assert cache.by_deployment == {("app", "D"): {"a": record("a", pid=7)}}
        assert cache.take_changed() == {"a": ("app", "D"), "b": ("app", "E")}
        assert cache.take_changed() == {}

    run(scenario())


def test_an_older_write_from_the_watch_never_undoes_the_leaders_delete() -> None:
    async def scenario() -> None:
        store = MemoryStore(clock=ManualClock())
        cache = ReplicaRecords()
        start = await read_records(store, cache) + 1
        written = await put(store, record("a"))
        cache.put(record("a"), written)
        deleted = await store.commit(deletes=[REPLICAS_PREFIX + "a"])
        assert deleted is not None and cache.delete("a", deleted)
        # The watch was behind: it now delivers the put, then the delete.
        events = store.watch_prefix(REPLICAS_PREFIX, start_revision=start)
        first = await anext(events)
        assert first.kind == "put" and not cache.apply(first)
        assert "a" not in cache.records
        second = await anext(events)
        assert second.kind == "delete"
        cache.apply(second)
        await events.aclose()
        assert cache.records == {} and cache.by_deployment == {}

    run(scenario())


def test_a_change_the_watch_missed_is_caught_by_the_full_read() -> None:
    async def scenario() -> None:
        store = MemoryStore(clock=ManualClock())
        cache = ReplicaRecords()
        await put(store, record("gone"))
        await read_records(store, cache)
        # Nothing feeds the cache: these changes are missed until the next full read.
        await store.delete(REPLICAS_PREFIX + "gone")
        await put(store, record("new"))
        assert set(cache.records) == {"gone"}
        await read_records(store, cache)
        assert set(cache.records) == {"new"}
        assert cache.take_changed() == {"gone": ("app", "D"), "new": ("app", "D")}

    run(scenario())


def test_a_full_read_keeps_writes_newer_than_itself() -> None:
    cache = ReplicaRecords()
    cache.put(record("a", pid=1), 10)
    cache.put(record("b"), 12)
    # A read at revision 11, older than b's write and than a's newer write below.
    cache.put(record("a", pid=2), 13)
    cache.load([], 11)
    assert cache.records == {"a": record("a", pid=2), "b": record("b")}
    cache.load([], 13)
    assert cache.records == {}


def test_a_reset_changes_nothing_by_itself() -> None:
    cache = ReplicaRecords()
    cache.put(record("a"), 3)
    assert not cache.apply(WatchEvent("reset", REPLICAS_PREFIX, b"", 9))
    assert set(cache.records) == {"a"}


def test_a_read_of_keys_only_drops_what_is_gone_and_asks_for_what_is_new() -> None:
    async def scenario() -> None:
        store = MemoryStore(clock=ManualClock())
        cache = ReplicaRecords()
        await put(store, record("a"))
        await put(store, record("b"))
        await read_records(store, cache)
        cache.take_changed()
        # Nothing new: the keys and revisions agree, and nothing is parsed or changed.
        items, revision = await store.get_prefix(REPLICAS_PREFIX, keys_only=True)
        assert cache.load(items, revision) and cache.take_changed() == {}
        # A record gone: its key is missing, which is enough to drop it.
        await store.delete(REPLICAS_PREFIX + "b")
        items, revision = await store.get_prefix(REPLICAS_PREFIX, keys_only=True)
        assert cache.load(items, revision)
        assert set(cache.records) == {"a"} and cache.take_changed() == {"b": ("app", "D")}
        # A record written: its value is needed, so nothing changes until it is read.
        await put(store, record("a", pid=9))
        items, revision = await store.get_prefix(REPLICAS_PREFIX, keys_only=True)
        assert not cache.load(items, revision)
        assert cache.records == {"a": record("a")} and cache.take_changed() == {}
        await read_records(store, cache)
        assert cache.records == {"a": record("a", pid=9)}

    run(scenario())


def test_the_keepers_check_reads_values_only_when_a_record_changed() -> None:
    class Counting(MemoryStore):
        reads: list[bool] = []

        async def get_prefix(self, prefix: str, *, keys_only: bool = False
                             ) -> tuple[list[KeyValue], int]:
            self.reads.append(keys_only)
            return await super().get_prefix(prefix, keys_only=keys_only)

    async def scenario() -> None:
        clock = ManualClock()
        store = Counting(clock=clock)
        cache = ReplicaRecords()
        keeper = RecordKeeper(store, cache, clock)
        await put(store, record("a"))
        await keeper.load()
        keeper.watching = True  # said to run, delivering nothing: the check finds it
        clock.advance(FULL_READ_S)
        await keeper.refresh()
        assert store.reads == [False, True]  # the load, then keys only: nothing new
        await put(store, record("b"))
        clock.advance(FULL_READ_S)
        await keeper.refresh()
        assert store.reads[2:] == [True, False] and set(cache.records) == {"a", "b"}

    run(scenario())
