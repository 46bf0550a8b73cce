"""Finding the leader through etcd: one watch of the leader key, not a read per second.

On the in-memory store (etcd's semantics, no process): the decision functions, then a
locator that learns of a new leader from its watch with no further read."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from weir.dataplane.route_table import LeaderLocator, leader_after, leader_moved
from weir.etcd.keys import LEADER_KEY
from weir.etcd.memory_store import MemoryStore
from weir.etcd.store import KeyValue, WatchEvent


def leader_value(address: str) -> bytes:
    return json.dumps({"address": address, "pid": 1}).encode()


def test_a_new_leader_named_moves_a_follower() -> None:
    assert leader_moved("a:1", "b:2")
    assert not leader_moved("a:1", "a:1")
    # Between terms (no leader key) the follower keeps its stream.
    assert not leader_moved("a:1", None)


def test_the_leader_a_change_of_the_key_names() -> None:
    put = WatchEvent(kind="put", key=LEADER_KEY, value=leader_value("b:2"), revision=5)
    assert leader_after(put) == "b:2"
    gone = WatchEvent(kind="delete", key=LEADER_KEY, value=b"", revision=6)
    assert leader_after(gone) is None


class CountingStore(MemoryStore):
    """Counts the reads: the locator must not read the key to follow it."""

    reads = 0

    async def get(self, key: str) -> KeyValue | None:
        self.reads += 1
        return await super().get(key)

    async def get_prefix(self, prefix: str, *, keys_only: bool = False
                         ) -> tuple[list[KeyValue], int]:
        self.reads += 1
        return await super().get_prefix(prefix, keys_only=keys_only)


def test_a_follower_learns_of_a_new_leader_by_watch_without_reads() -> None:
    async def main() -> None:
        store = CountingStore()
        await store.put(LEADER_KEY, leader_value("a:1"))
        await store.put(LEADER_KEY + "-other", b"not json")  # a key sharing the prefix
        locator = LeaderLocator(store=store)
        try:
            assert await locator.leader_address() == "a:1"
            await asyncio.sleep(0.05)  # the watch is up
            reads = store.reads
            moved = asyncio.get_running_loop().create_task(locator.until_moved_from("a:1"))
            await asyncio.sleep(0.05)
            await store.delete(LEADER_KEY)  # between terms: no news for a follower
            await asyncio.sleep(0.05)
            assert not moved.done()
            await store.put(LEADER_KEY, leader_value("b:2"))
            await asyncio.wait_for(moved, 5)
            # Following the leader read nothing: the watch told.
            assert store.reads == reads, (store.reads, reads)
            # To reconnect, a read: one per ask.
            assert await locator.leader_address() == "b:2"
            assert store.reads == reads + 1
        finally:
            await locator.close()
            await store.close()

    asyncio.run(main())


def test_a_pause_ends_when_the_leader_changes() -> None:
    async def main() -> Any:
        store = MemoryStore()
        locator = LeaderLocator(store=store)
        try:
            assert await locator.leader_address() is None
            await asyncio.sleep(0.05)  # the watch is up
            pause = asyncio.get_running_loop().create_task(locator.until_changed(30.0))
            await asyncio.sleep(0.05)
            assert not pause.done()
            await store.put(LEADER_KEY, leader_value("c:3"))
            await asyncio.wait_for(pause, 5)
        finally:
            await locator.close()
            await store.close()

    asyncio.run(main())


def test_a_silent_watch_does_not_hide_a_new_leader_from_a_reconnect() -> None:
    async def main() -> None:
        store = MemoryStore()
        await store.put(LEADER_KEY, leader_value("a:1"))
        locator = LeaderLocator(store=store)
        try:
            assert await locator.leader_address() == "a:1"
            await asyncio.sleep(0.05)
            assert locator._watch is not None
            locator._watch.cancel()  # the watch falls silent
            await store.put(LEADER_KEY, leader_value("b:2"))
            assert await locator.leader_address() == "b:2"
            store.set_available(False)  # etcd away: the last leader the watch saw
            assert await locator.leader_address() == "a:1"
        finally:
            await locator.close()
            await store.close()

    asyncio.run(main())
