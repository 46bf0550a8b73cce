"""weir.etcd.memory_store beyond the shared contract: the clock, outages, peers.

What both stores do is in test_store_contract.py; these are the knobs only the memory
store has, and the orderings a moved clock makes possible that real time does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from weir.etcd.memory_store import ManualClock, MemoryStore
from weir.etcd.store import StoreClosedError, StoreError, StoreUnavailableError, in_failover

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
    """Run one test body on a fresh event loop, bounded so a hang fails instead."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_the_clock_only_moves_forward_when_told() -> None:
    clock = ManualClock(5.0)
    assert clock() == 5.0
    clock.advance(1.5)
    assert clock() == 6.5
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
    with pytest.raises(ValueError):
        MemoryStore(timeout=0)


def test_etcd_away_fails_calls_as_no_member_answering_or_as_a_failover() -> None:
    async def body() -> None:
        store = MemoryStore(clock=ManualClock())
        store.set_available(False)
        with pytest.raises(StoreUnavailableError) as info:
            await store.put("/k", b"v")
        assert str(info.value) == "etcd at memory is unreachable: put /k failed: no member answers"
        assert not in_failover(info.value)
        store.set_available(False, failover=True)
        with pytest.raises(StoreUnavailableError) as info:
            await store.get("/k")
        assert in_failover(info.value)
        store.set_available(True)
        assert await store.get("/k") is None

    run(body())


def test_peers_share_one_etcd_and_close_on_their_own() -> None:
    async def body() -> None:
        store = MemoryStore(clock=ManualClock())
        peer = store.peer()
        revision = await store.put("/k", b"v")
        assert store.revision == peer.revision == revision
        kv = await peer.get("/k")
        assert kv is not None and kv.value == b"v"
        await peer.close()
        with pytest.raises(StoreClosedError):
            await peer.get("/k")
        assert await store.get("/k") is not None
        store.set_available(False)  # etcd is away for every client
        with pytest.raises(StoreUnavailableError):
            await store.peer().get("/k")

    run(body())


def test_compact_refuses_the_future_and_the_past() -> None:
    async def body() -> None:
        store = MemoryStore(clock=ManualClock())
        revision = await store.put("/k", b"v")
        with pytest.raises(StoreError, match="future"):
            store.compact(revision + 1)
        store.compact(revision)
        with pytest.raises(StoreError, match="already compacted"):
            store.compact(revision)
        assert await store.get_at_revision("/k", revision) is not None

    run(body())


def test_no_lease_expires_while_etcd_is_away_and_each_gets_a_full_ttl_back() -> None:
    clock = ManualClock()

    async def body() -> None:
        store = MemoryStore(clock=clock)
        lease = await store.grant_lease(3)
        await store.put("/leased", b"x", lease=lease)
        clock.advance(2)
        store.set_available(False)
        clock.advance(60)
        store.set_available(True)  # as a restarted etcd: every lease gets a full TTL
        clock.advance(lease.ttl - 0.1)
        assert await store.get("/leased") is not None
        clock.advance(0.1)
        assert await store.get("/leased") is None

    run(body())


def test_keep_alive_gives_up_after_a_ttl_away_even_if_etcd_is_back_before_it_looks() -> None:
    clock = ManualClock()

    async def body() -> None:
        store = MemoryStore(clock=clock)
        lease = await store.grant_lease(2)
        await store.put("/leased", b"x", lease=lease)
        lost = asyncio.Event()
        task = store.keep_alive(lease, lost.set)
        # Away for a whole TTL, back again, with no chance for the keep-alive to run between.
        store.set_available(False)
        clock.advance(lease.ttl)
        store.set_available(True)
        await asyncio.wait_for(lost.wait(), 1)
        await asyncio.wait_for(task, 1)
        # etcd kept the lease (it was away too); nobody refreshes it any more.
        assert await store.get("/leased") is not None
        clock.advance(lease.ttl)
        assert await store.get("/leased") is None

    run(body())


def test_keep_alive_rides_out_an_outage_shorter_than_the_ttl() -> None:
    clock = ManualClock()

    async def body() -> None:
        store = MemoryStore(clock=clock)
        lease = await store.grant_lease(2)
        await store.put("/leased", b"x", lease=lease)
        lost: list[bool] = []
        task = store.keep_alive(lease, lambda: lost.append(True))
        store.set_available(False)
        clock.advance(lease.ttl - 0.5)
        store.set_available(True)
        clock.advance(100 * lease.ttl)
        assert await store.get("/leased") is not None
        assert not lost and not task.done()
        task.cancel()

    run(body())


def test_keep_alive_counts_from_the_call_not_from_when_its_task_first_runs() -> None:
    clock = ManualClock()

    async def body() -> None:
        store = MemoryStore(clock=clock)
        lease = await store.grant_lease(2)
        await store.put("/leased", b"x", lease=lease)
        task = store.keep_alive(lease, lambda: None)
        clock.advance(10)  # before the task had a chance to run
        assert await store.get("/leased") is not None
        task.cancel()

    run(body())


def test_a_keep_alive_cannot_revive_a_lease_whose_time_is_up() -> None:
    clock = ManualClock()

    async def body() -> None:
        store = MemoryStore(clock=clock)
        lease = await store.grant_lease(2)
        await store.put("/leased", b"x", lease=lease)
        clock.advance(lease.ttl)
        lost = asyncio.Event()
        store.keep_alive(lease, lost.set)
        await asyncio.wait_for(lost.wait(), 1)
        assert await store.get("/leased") is None

    run(body())
