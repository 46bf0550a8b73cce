"""weir.etcd.presence on MemoryStore: listed while alive, back after etcd was away, gone
when withdrawn or dead."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from weir.etcd.memory_store import ManualClock, MemoryStore
from weir.etcd.presence import Presence

T = TypeVar("T")

KEY = "/weir/proxies/p1"


def run(coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
    """Run one test body on a fresh event loop, bounded so a hang fails instead."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_presence_holds_its_key_and_withdraw_removes_it() -> None:
    async def body() -> None:
        clock = ManualClock()
        store = MemoryStore(clock=clock)
        presence = Presence(store, KEY, b"me", ttl=3)
        presence.start()
        await asyncio.wait_for(presence.registered.wait(), 2)
        clock.advance(60)  # kept alive, however long
        kv = await store.get(KEY)
        assert kv is not None and kv.value == b"me"
        await presence.withdraw()
        assert await store.get(KEY) is None

    run(body())


def test_presence_registers_again_after_etcd_was_away_for_a_ttl() -> None:
    async def body() -> None:
        clock = ManualClock()
        store = MemoryStore(clock=clock)
        presence = Presence(store, KEY, b"me", ttl=3)
        presence.start()
        await asyncio.wait_for(presence.registered.wait(), 2)
        before = await store.get(KEY)
        assert before is not None

        store.set_available(False)
        clock.advance(3)
        deadline = asyncio.get_running_loop().time() + 2
        while presence.registered.is_set():  # the keep-alive gives the lease up
            assert asyncio.get_running_loop().time() < deadline, "lease loss not noticed"
            await asyncio.sleep(0.01)
        store.set_available(True)
        await asyncio.wait_for(presence.registered.wait(), 3)
        after = await store.get(KEY)
        assert after is not None and after.lease not in (0, before.lease)

        clock.advance(60)  # the new lease is kept alive, the old one is not needed
        assert await store.get(KEY) is not None
        await presence.withdraw()
        assert await store.get(KEY) is None

    run(body())


def test_a_dead_process_drops_out_a_ttl_after_its_last_refresh() -> None:
    async def body() -> None:
        clock = ManualClock()
        store = MemoryStore(clock=clock)
        dying = store.peer()
        presence = Presence(dying, KEY, b"me", ttl=3)
        presence.start()
        await asyncio.wait_for(presence.registered.wait(), 2)
        await dying.close()  # as the process dying would: nothing is revoked
        clock.advance(2.9)
        assert await store.get(KEY) is not None
        clock.advance(0.1)
        assert await store.get(KEY) is None
        await presence.withdraw()

    run(body())
