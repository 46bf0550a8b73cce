"""The Store contract: every case runs on EtcdStore against a real etcd and on MemoryStore.

A case that passes on one store and fails on the other is a bug in MemoryStore (etcd is
the reference) or a behaviour of etcd that the interface should not promise. Time is the
one difference: on etcd it passes by itself and checks poll with a deadline; on memory a
test moves a ManualClock, and the same deadlines hold at once.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from weir.etcd.etcd_store import EtcdStore
from weir.etcd.memory_store import ManualClock, MemoryStore
from weir.etcd.server import EtcdServer
from weir.etcd.store import (
    KeyValue,
    Store,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    WatchEvent,
)

T = TypeVar("T")


# -- two etcds, one way to act on them --------------------------------------------------------


class World:
    """An etcd, clients of it, and what a test does to it: alike for both stores."""

    def __init__(self) -> None:
        #: Keys of one test live under their own prefix: the real etcd is shared.
        self.prefix = f"/contract/{uuid.uuid4().hex[:8]}/"
        self._stores: list[Store] = []

    def store(self) -> Store:
        """A new client, as one process holds; closed when the test ends."""
        store = self._new_store()
        self._stores.append(store)
        return store

    def _new_store(self) -> Store:
        raise NotImplementedError

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for leases; checks after it still poll with a deadline."""

    async def hold(self, seconds: float) -> None:
        """Let ``seconds`` pass before the next check: nothing may happen meanwhile."""

    async def compact(self, revision: int) -> None:
        raise NotImplementedError

    async def stop_etcd(self) -> None:
        raise NotImplementedError

    async def start_etcd(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        for store in self._stores:
            await store.close()


class MemoryWorld(World):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(1000.0)
        self._etcd = MemoryStore(clock=self.clock)

    def _new_store(self) -> Store:
        return self._etcd.peer()

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    async def hold(self, seconds: float) -> None:
        self.clock.advance(seconds)

    async def compact(self, revision: int) -> None:
        self._etcd.compact(revision)

    async def stop_etcd(self) -> None:
        self._etcd.set_available(False)

    async def start_etcd(self) -> None:
        self._etcd.set_available(True)


class EtcdWorld(World):
    def __init__(self, server: EtcdServer) -> None:
        super().__init__()
        self.server = server

    def _new_store(self) -> Store:
        return EtcdStore(self.server.endpoint)

    async def hold(self, seconds: float) -> None:
        # What is under test is that nothing happens for this long: real time must pass.
        await asyncio.sleep(seconds)

    async def compact(self, revision: int) -> None:
        # Through etcd's JSON gateway: Weir itself never compacts.
        request = urllib.request.Request(
            f"http://{self.server.endpoint}/v3/kv/compaction",
            data=json.dumps({"revision": revision, "physical": True}).encode(),
            method="POST",
        )
        await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=2).close())

    async def stop_etcd(self) -> None:
        await asyncio.to_thread(self.server.kill)

    async def start_etcd(self) -> None:
        await asyncio.to_thread(self.server.start)


@pytest.fixture(scope="module")
def shared_etcd() -> Iterator[EtcdServer]:
    """One etcd for the module's etcd cases (each keeps to its own key prefix)."""
    server = EtcdServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["memory", "etcd"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    if request.param == "memory":
        yield MemoryWorld()
        return
    server: EtcdServer = request.getfixturevalue("shared_etcd")
    yield EtcdWorld(server)
    if not server.running:  # a case that stopped etcd failed before starting it again
        server.start()


def run(world: World, body: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30) -> T:
    """Run one case on a fresh event loop, bounded, closing the world's stores after it."""

    async def bounded() -> T:
        try:
            return await asyncio.wait_for(body(), timeout)
        finally:
            await world.close()

    return asyncio.run(bounded())


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``check`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


class Collector:
    """Drains a watch into a list in a background task."""

    def __init__(self, store: Store, prefix: str, start_revision: int | None) -> None:
        self.events: list[WatchEvent] = []
        self.ended = asyncio.Event()
        self._source = store.watch_prefix(prefix, start_revision)
        self.task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        async for event in self._source:
            self.events.append(event)
        self.ended.set()

    async def wait_for(self, count: int, what: str, timeout: float = 5) -> list[WatchEvent]:
        async def enough() -> bool:
            return len(self.events) >= count

        await eventually(enough, timeout, what)
        return self.events

    def summary(self) -> list[tuple[str, str, bytes]]:
        return [(e.kind, e.key, e.value) for e in self.events]


async def revision_now(store: Store) -> int:
    _, revision = await store.get_prefix("/contract-revision-probe")
    return revision


# -- keys and revisions -----------------------------------------------------------------------


def test_put_get_delete_and_the_revisions_they_leave(world: World) -> None:
    key = world.prefix + "a"

    async def body() -> None:
        store = world.store()
        assert store.timeout > 0
        assert await store.get(key) is None
        before = await revision_now(store)
        first = await store.put(key, b"1")
        assert first == before + 1  # one write, one revision
        assert await store.get(key) == KeyValue(key, b"1", first, first, lease=0, version=1)
        second = await store.put(key, b"1")  # the same value is still a write
        assert second == first + 1
        assert await store.get(key) == KeyValue(key, b"1", second, first, lease=0, version=2)

        assert await store.delete(key) is True
        deleted = await revision_now(store)
        assert deleted == second + 1
        assert await store.get(key) is None
        assert await store.delete(key) is False
        assert await revision_now(store) == deleted  # nothing changed, no revision
        again = await store.put(key, b"new")
        # A key created again starts over: its old revisions and version are forgotten.
        assert await store.get(key) == KeyValue(key, b"new", again, again, lease=0, version=1)

    run(world, body)


def test_get_prefix_sorts_and_delete_prefix_deletes_in_one_revision(world: World) -> None:
    p = world.prefix

    async def body() -> None:
        store = world.store()
        for name in ("app/c", "app/a", "app/b", "apple", "other"):
            last = await store.put(p + name, name.encode())
        items, revision = await store.get_prefix(p + "app/")
        assert [kv.key for kv in items] == [p + "app/a", p + "app/b", p + "app/c"]
        assert [kv.value for kv in items] == [b"app/a", b"app/b", b"app/c"]
        assert revision == last
        # Keys only: the same keys and revisions, no values.
        bare, at = await store.get_prefix(p + "app/", keys_only=True)
        assert at == last
        assert bare == [replace(kv, value=b"") for kv in items]
        assert await store.delete_prefix(p + "app/") == 3
        assert await revision_now(store) == last + 1
        assert (await store.get_prefix(p + "app/"))[0] == []
        assert await store.get(p + "apple") is not None
        assert await store.delete_prefix(p + "nothing/") == 0
        assert await revision_now(store) == last + 1

    run(world, body)


def test_commit_applies_everything_at_one_revision_when_guards_hold(world: World) -> None:
    p = world.prefix

    async def body() -> None:
        store = world.store()
        rev_a = await store.put(p + "a", b"a1")
        await store.put(p + "gone", b"x")
        revision = await store.commit(
            puts={p + "a": b"a2", p + "new": b"n"},
            deletes=[p + "gone"],
            expect_mod_revision={p + "a": rev_a, p + "new": 0},
        )
        assert revision == await revision_now(store)
        items, _ = await store.get_prefix(p)
        assert [(kv.key, kv.value) for kv in items] == [(p + "a", b"a2"), (p + "new", b"n")]
        assert {kv.mod_revision for kv in items} == {revision}
        assert [kv.version for kv in items] == [2, 1]
        # Guards only, or deletes of absent keys: nothing changes, the revision stays.
        assert await store.commit(expect_mod_revision={p + "a": revision}) == revision
        assert await store.commit(deletes=[p + "absent"]) == revision

    run(world, body)


def test_commit_changes_nothing_when_a_guard_fails(world: World) -> None:
    p = world.prefix

    async def body() -> None:
        store = world.store()
        rev_a = await store.put(p + "a", b"a1")
        await store.put(p + "a", b"someone else")
        before = await revision_now(store)
        stale = await store.commit(
            puts={p + "a": b"mine", p + "b": b"b"}, expect_mod_revision={p + "a": rev_a}
        )
        assert stale is None
        present = await store.commit(puts={p + "b": b"b"}, expect_mod_revision={p + "a": 0})
        assert present is None
        assert await store.commit(deletes=[p + "a"], expect_mod_revision={p + "b": 7}) is None
        assert await revision_now(store) == before
        items, _ = await store.get_prefix(p)
        assert [(kv.key, kv.value) for kv in items] == [(p + "a", b"someone else")]
        with pytest.raises(ValueError, match="both puts and deletes"):
            await store.commit(puts={p + "a": b"x"}, deletes=[p + "a"])

    run(world, body)


def test_create_if_absent_has_exactly_one_winner_among_racing_clients(world: World) -> None:
    key = world.prefix + "race"

    async def body() -> None:
        stores = [world.store() for _ in range(3)]
        before = await revision_now(stores[0])
        results = await asyncio.gather(
            *(stores[i % 3].create_if_absent(key, f"candidate-{i}".encode()) for i in range(12))
        )
        assert results.count(True) == 1
        kv = await stores[1].get(key)
        assert kv is not None and kv.value == f"candidate-{results.index(True)}".encode()
        assert kv.create_revision == before + 1
        assert await revision_now(stores[2]) == before + 1  # the losers wrote nothing
        await stores[0].delete(key)
        assert await stores[2].create_if_absent(key, b"later")

    run(world, body)


def test_get_at_revision_reads_history_and_refuses_future_and_compacted(world: World) -> None:
    key = world.prefix + "cfg"

    async def body() -> None:
        store = world.store()
        first = await store.put(key, b"v1")
        second = await store.put(key, b"v2")
        await store.delete(key)
        third = await store.put(key, b"v3")
        at = {rev: await store.get_at_revision(key, rev) for rev in (first, second, third)}
        assert at[first] == KeyValue(key, b"v1", first, first, lease=0, version=1)
        assert at[second] == KeyValue(key, b"v2", second, first, lease=0, version=2)
        assert at[third] == KeyValue(key, b"v3", third, third, lease=0, version=1)
        assert await store.get_at_revision(key, second + 1) is None  # deleted then
        assert await store.get_at_revision(key, first - 1) is None  # not yet created
        with pytest.raises(StoreError, match="future revision"):
            await store.get_at_revision(key, third + 100)

        await world.compact(second)
        with pytest.raises(StoreError, match="compacted"):
            await store.get_at_revision(key, first)
        # The compaction revision itself, and later ones, are still there.
        kv = await store.get_at_revision(key, second)
        assert kv is not None and kv.value == b"v2"
        assert await store.get_at_revision(key, second + 1) is None

    run(world, body)


# -- leases -----------------------------------------------------------------------------------


def test_lease_expiry_deletes_its_keys_in_one_revision_a_watch_sees(world: World) -> None:
    p = world.prefix

    async def body() -> None:
        store = world.store()
        lease = await store.grant_lease(0.2)
        assert lease.ttl == 2  # rounded up, then raised to etcd's minimum
        await store.put(p + "leased", b"x", lease=lease)
        assert await store.create_if_absent(p + "leased2", b"y", lease=lease)
        await store.put(p + "plain", b"z")
        kv = await store.get(p + "leased")
        assert kv is not None and kv.lease == lease.id
        watch = Collector(store, p, await revision_now(store) + 1)

        await world.advance(lease.ttl)

        async def gone() -> bool:
            items, _ = await store.get_prefix(p)
            return [kv.key for kv in items] == [p + "plain"]

        await eventually(gone, lease.ttl + 3, "leased keys deleted at expiry")
        events = await watch.wait_for(2, "the expiry's deletes")
        assert watch.summary() == [
            ("delete", p + "leased", b""),
            ("delete", p + "leased2", b""),
        ]
        assert events[0].revision == events[1].revision
        with pytest.raises(StoreError, match="lease not found") as info:
            await store.put(p + "late", b"x", lease=lease)
        assert not isinstance(info.value, StoreUnavailableError)

    run(world, body)


def test_revoke_deletes_keys_at_once_and_a_later_put_unbinds_a_key(world: World) -> None:
    p = world.prefix

    async def body() -> None:
        store = world.store()
        lease = await store.grant_lease(30)
        await store.put(p + "leased", b"x", lease=lease)
        await store.put(p + "rebound", b"x", lease=lease)
        await store.put(p + "rebound", b"no lease now")
        await store.revoke_lease(lease)
        assert await store.get(p + "leased") is None
        kv = await store.get(p + "rebound")
        assert kv is not None and kv.lease == 0
        await store.revoke_lease(lease)  # gone already: no error

        empty = await store.grant_lease(30)
        before = await revision_now(store)
        await store.revoke_lease(empty)
        assert await revision_now(store) == before  # no keys, nothing written
        with pytest.raises(StoreError, match="lease not found"):
            await store.create_if_absent(p + "x", b"", lease=empty)

    run(world, body)


def test_keep_alive_holds_a_lease_past_its_ttl_and_cancelling_lets_it_expire(
    world: World,
) -> None:
    key = world.prefix + "alive"

    async def body() -> None:
        store = world.store()
        lease = await store.grant_lease(2)
        await store.put(key, b"x", lease=lease)
        lost: list[bool] = []
        task = store.keep_alive(lease, lambda: lost.append(True))
        await world.hold(lease.ttl + 1)
        assert await store.get(key) is not None
        assert not lost and not task.done()

        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await world.advance(lease.ttl)

        async def gone() -> bool:
            return await store.get(key) is None

        await eventually(gone, lease.ttl + 3, "the key gone a TTL after the keep-alive stopped")
        assert not lost  # cancelling is not losing

    run(world, body)


def test_keep_alive_reports_a_revoked_lease(world: World) -> None:
    async def body() -> None:
        store = world.store()
        lease = await store.grant_lease(3)
        lost = asyncio.Event()
        task = store.keep_alive(lease, lost.set)
        await world.store().revoke_lease(lease)
        await asyncio.wait_for(lost.wait(), 3)  # the next refresh, ttl/3 away on etcd
        await asyncio.wait_for(task, 1)

    run(world, body)


def test_closing_a_store_ends_its_watches_and_keep_alives_but_not_its_leases(
    world: World,
) -> None:
    key = world.prefix + "of-the-dead"

    async def body() -> None:
        dying, survivor = world.store(), world.store()
        async with dying:
            lease = await dying.grant_lease(2)
            await dying.put(key, b"x", lease=lease)
            lost = asyncio.Event()
            keeper = dying.keep_alive(lease, lost.set)
            watch = Collector(dying, world.prefix, await revision_now(dying) + 1)
        await asyncio.wait_for(watch.ended.wait(), 3)
        await asyncio.wait_for(lost.wait(), 3)
        await asyncio.wait_for(keeper, 1)
        with pytest.raises(StoreClosedError):
            await dying.get(key)
        with pytest.raises(StoreClosedError):
            await dying.connect()

        # As when a process dies: its lease is not revoked, it expires.
        assert await survivor.get(key) is not None
        await world.advance(lease.ttl)

        async def gone() -> bool:
            return await survivor.get(key) is None

        await eventually(gone, lease.ttl + 3, "the dead store's lease expired")

    run(world, body)


# -- watches ----------------------------------------------------------------------------------


def test_watch_from_a_revision_replays_history_then_follows_in_order(world: World) -> None:
    p = world.prefix

    async def body() -> None:
        store, writer = world.store(), world.store()
        first = await writer.put(p + "w/a", b"1")
        await writer.put(p + "w/a", b"2")
        watch = Collector(store, p + "w/", start_revision=first)
        await watch.wait_for(2, "history replayed")

        await writer.put(p + "elsewhere", b"x")
        await writer.commit(puts={p + "w/b": b"3"}, deletes=[p + "w/a"])
        await writer.delete(p + "w/b")
        events = await watch.wait_for(5, "later puts and deletes")
        assert watch.summary() == [
            ("put", p + "w/a", b"1"),
            ("put", p + "w/a", b"2"),
            ("put", p + "w/b", b"3"),
            ("delete", p + "w/a", b""),
            ("delete", p + "w/b", b""),
        ]
        revisions = [e.revision for e in events]
        assert revisions[0] == first
        assert revisions[2] == revisions[3]  # one commit, one revision
        assert revisions == sorted(revisions)

        now = Collector(store, p + "w/", start_revision=None)  # from now on

        async def probed() -> bool:
            await writer.put(p + "w/probe", b"")
            return bool(now.events)

        await eventually(probed, 5, "a watch from now to see a probe write")
        assert all(e.key == p + "w/probe" for e in now.events)

    run(world, body)


def test_watch_resets_when_the_history_it_needs_was_compacted(world: World) -> None:
    key = world.prefix + "w/a"

    async def body() -> None:
        store = world.store()
        first = await store.put(key, b"1")
        last = await store.put(key, b"2")
        await world.compact(last)
        watch = Collector(store, world.prefix, start_revision=first)
        await watch.wait_for(1, "the reset event")
        reset = watch.events[0]
        assert (reset.kind, reset.key) == ("reset", world.prefix)
        assert reset.revision >= last
        await store.put(world.prefix + "w/b", b"3")
        await watch.wait_for(2, "the event after the reset")
        assert watch.summary()[1] == ("put", world.prefix + "w/b", b"3")

    run(world, body)


# -- etcd away --------------------------------------------------------------------------------


def test_while_etcd_is_away_calls_fail_keep_alives_give_up_and_watches_resume(
    world: World,
) -> None:
    p = world.prefix

    async def body() -> None:
        store, writer = world.store(), world.store()
        lease = await store.grant_lease(2)
        lost = asyncio.Event()
        store.keep_alive(lease, lost.set)
        watch = Collector(store, p, await revision_now(store) + 1)
        await writer.put(p + "before", b"1")
        await watch.wait_for(1, "the first event")

        await world.stop_etcd()
        with pytest.raises(StoreUnavailableError):
            await writer.put(p + "during", b"x")
        with pytest.raises(StoreUnavailableError):
            await writer.get(p + "before")
        await world.advance(lease.ttl)
        await asyncio.wait_for(lost.wait(), lease.ttl + 1)

        await world.start_etcd()

        async def back() -> bool:
            try:
                return await writer.get(p + "before") is not None
            except StoreUnavailableError:
                return False

        await eventually(back, 5, "etcd answering again")  # a read, safe to repeat
        await writer.put(p + "after", b"2")
        await watch.wait_for(2, "the event after etcd returned", timeout=10)
        assert watch.summary() == [("put", p + "before", b"1"), ("put", p + "after", b"2")]
        fresh = await store.grant_lease(2)
        assert fresh.id != lease.id

    run(world, body)

