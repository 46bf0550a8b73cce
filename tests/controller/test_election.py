"""weir.controller.election: one leader, take-over, step-down.

First against real etcd (real time, real lease expiry), then on MemoryStore with a clock
the test moves: the same rules, checked without waiting out a TTL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any, TypeVar

import pytest

from weir.controller.election import Election
from weir.etcd.etcd_store import EtcdStore
from weir.etcd.keys import LEADER_KEY
from weir.etcd.memory_store import ManualClock, MemoryStore
from weir.etcd.server import EtcdServer
from weir.etcd.store import Store, StoreClosedError

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
    """Run one test body on a fresh event loop, bounded so a hang fails instead."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def within(seconds: float, awaitable: Awaitable[T]) -> tuple[T, float]:
    """Await with a deadline; return the result and how long it took."""
    start = time.monotonic()
    result = await asyncio.wait_for(awaitable, seconds)
    return result, time.monotonic() - start


class Candidates:
    """Two controllers, each with its own connection to etcd, as two processes would."""

    def __init__(self, stores: Sequence[Store], ttl: float) -> None:
        self.stores = list(stores)
        self.elections = [
            Election(store, f"controller-{i}".encode(), ttl=ttl)
            for i, store in enumerate(self.stores)
        ]

    async def race(self) -> tuple[Election, Election, asyncio.Task[None]]:
        """Campaign with both; return (leader, standby, the standby's campaign)."""
        campaigns = [asyncio.create_task(e.campaign()) for e in self.elections]
        done, _ = await asyncio.wait(campaigns, return_when=asyncio.FIRST_COMPLETED, timeout=5)
        assert len(done) == 1, "exactly one candidate should win"
        first = campaigns.index(done.pop())
        leader, standby = self.elections[first], self.elections[1 - first]
        return leader, standby, campaigns[1 - first]

    async def close(self) -> None:
        for election in self.elections:
            await election.resign()
        for store in self.stores:
            await store.close()


def on_etcd(server: EtcdServer) -> list[Store]:
    return [EtcdStore(server.endpoint), EtcdStore(server.endpoint)]


def test_two_candidates_one_leader(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        candidates = Candidates(on_etcd(etcd_server), ttl=3)
        try:
            leader, standby, waiting = await candidates.race()
            assert leader.is_leader and not standby.is_leader
            assert await standby.leader() == leader.identity
            assert await leader.leader() == leader.identity
            # Standing by holds no key and does not end while the leader lives.
            await asyncio.sleep(0.5)
            assert not waiting.done()
            waiting.cancel()
            assert not leader.lost.is_set()
            await leader.campaign()  # already leading: returns at once
        finally:
            await candidates.close()

    run(body())


def test_standby_takes_over_within_ttl_after_the_leader_dies(etcd_server: EtcdServer) -> None:
    ttl = 3.0

    async def body() -> None:
        candidates = Candidates(on_etcd(etcd_server), ttl=ttl)
        try:
            leader, standby, waiting = await candidates.race()
            # As SIGKILL would: the leader's connection drops, its lease is not revoked.
            dead = candidates.stores[candidates.elections.index(leader)]
            await dead.close()
            _, took = await within(ttl + 1, waiting)
            assert standby.is_leader
            assert await standby.leader() == standby.identity
            assert took > 1.0, "the lease, not a revoke, should have freed the key"
            assert leader.lost.is_set() and not leader.is_leader
        finally:
            await candidates.close()

    run(body())


def test_resign_hands_over_at_once(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        candidates = Candidates(on_etcd(etcd_server), ttl=3)
        try:
            leader, standby, waiting = await candidates.race()
            await leader.resign()
            assert leader.lost.is_set() and not leader.is_leader
            await within(1, waiting)
            assert standby.is_leader
            assert await leader.leader() == standby.identity
        finally:
            await candidates.close()

    run(body())


def test_leader_steps_down_when_etcd_is_gone_for_a_ttl(etcd_server: EtcdServer) -> None:
    ttl = 2.0

    async def body() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            election = Election(store, b"only", ttl=ttl)
            await within(2, election.campaign())
            killed = time.monotonic()
            await asyncio.to_thread(etcd_server.kill)
            await within(ttl + 1, election.lost.wait())
            assert time.monotonic() - killed <= ttl + 0.5
            assert not election.is_leader

            # Back again: the old lease has expired, a new campaign wins.
            await asyncio.to_thread(etcd_server.start)
            await within(ttl + 5, election.campaign())
            assert election.is_leader and not election.lost.is_set()
            await election.resign()

    run(body())


def test_leader_steps_down_when_its_key_is_deleted(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            election = Election(store, b"only", key="/test/leader", ttl=3)
            await within(2, election.campaign())
            await store.put("/test/leader-other", b"unrelated")  # same prefix, other key
            await store.delete("/test/leader")
            await within(2, election.lost.wait())
            assert not election.is_leader
            await within(2, election.campaign())
            assert await election.leader() == b"only"
            await election.resign()
            assert await election.leader() is None

    run(body())


def test_campaign_rides_out_etcd_downtime_and_stops_with_the_store(
    etcd_server: EtcdServer,
) -> None:
    async def body() -> None:
        store = EtcdStore(etcd_server.endpoint)
        election = Election(store, b"patient", ttl=2)
        await asyncio.to_thread(etcd_server.kill)
        campaign = asyncio.create_task(election.campaign())
        await asyncio.sleep(0.5)  # a while with etcd away: the campaign must not give up
        assert not campaign.done()
        await asyncio.to_thread(etcd_server.start)
        await within(5, campaign)
        assert election.is_leader
        await election.resign()

        await store.put(LEADER_KEY, b"someone")
        rival = asyncio.create_task(Election(store, b"rival", ttl=2).campaign())
        await asyncio.sleep(0.2)  # let it reach standing by
        await store.close()
        with pytest.raises(StoreClosedError):
            await asyncio.wait_for(rival, 3)

    run(body())


# -- on MemoryStore: time moves only when the test says ----------------------------------------


async def still_pending(task: asyncio.Task[None], seconds: float = 0.2) -> None:
    """Give ``task`` a moment of real time and check that it did not finish."""
    done, _ = await asyncio.wait({task}, timeout=seconds)
    assert not done, "finished when it should still be waiting"


def in_memory(clock: ManualClock) -> list[Store]:
    first = MemoryStore(clock=clock)
    return [first, first.peer()]


def test_campaign_wins_on_an_empty_key() -> None:
    async def body() -> None:
        clock = ManualClock()
        store = MemoryStore(clock=clock)
        election = Election(store, b"only", ttl=3)
        assert await election.leader() is None
        await within(1, election.campaign())
        assert election.is_leader and not election.lost.is_set()
        kv = await store.get(LEADER_KEY)
        assert kv is not None and kv.value == b"only" and kv.lease != 0
        clock.advance(60)  # the keep-alive holds the lease however long it leads
        assert await election.leader() == b"only"
        assert election.is_leader
        await election.resign()
        assert await store.get(LEADER_KEY) is None

    run(body(), timeout=10)


def test_a_second_candidate_stands_by_while_the_leader_lives() -> None:
    async def body() -> None:
        clock = ManualClock()
        candidates = Candidates(in_memory(clock), ttl=3)
        try:
            leader, standby, waiting = await candidates.race()
            assert not standby.is_leader
            assert await standby.leader() == leader.identity
            clock.advance(30)
            await still_pending(waiting)
            assert leader.is_leader and not leader.lost.is_set()
            assert await standby.leader() == leader.identity
        finally:
            await candidates.close()

    run(body(), timeout=10)


def test_the_standby_wins_when_the_dead_leaders_lease_expires() -> None:
    ttl = 3.0

    async def body() -> None:
        clock = ManualClock()
        candidates = Candidates(in_memory(clock), ttl=ttl)
        try:
            leader, standby, waiting = await candidates.race()
            # As SIGKILL would: the leader's connection drops, its lease is not revoked.
            await candidates.stores[candidates.elections.index(leader)].close()
            await within(1, leader.lost.wait())
            clock.advance(ttl - 0.5)
            await still_pending(waiting)
            clock.advance(0.5)
            await within(1, waiting)
            assert standby.is_leader and not leader.is_leader
            assert await standby.leader() == standby.identity
        finally:
            await candidates.close()

    run(body(), timeout=10)


def test_resign_hands_over_without_waiting_for_the_lease() -> None:
    async def body() -> None:
        candidates = Candidates(in_memory(ManualClock()), ttl=3)
        try:
            leader, standby, waiting = await candidates.race()
            await leader.resign()
            assert leader.lost.is_set() and not leader.is_leader
            await within(1, waiting)  # the clock never moved: the revoke freed the key
            assert standby.is_leader
            assert await leader.leader() == standby.identity
        finally:
            await candidates.close()

    run(body(), timeout=10)


def test_depose_revokes_only_the_named_leaders_term() -> None:
    async def body() -> None:
        candidates = Candidates(in_memory(ManualClock()), ttl=3)
        try:
            leader, standby, waiting = await candidates.race()
            assert not await standby.depose(b"someone else", "not the leader")
            await still_pending(waiting, 0.05)
            assert await standby.depose(leader.identity, "its address refuses connections")
            await within(1, waiting)
            assert standby.is_leader
            await within(1, leader.lost.wait())  # the deposed leader learns it too
            assert not leader.is_leader
            # The new term has its own lease: deposing the old name again hits nothing.
            assert not await standby.depose(leader.identity, "late")
            assert standby.is_leader
        finally:
            await candidates.close()

    run(body(), timeout=10)


def test_leader_steps_down_after_a_ttl_without_etcd_and_wins_again_later() -> None:
    ttl = 2.0

    async def body() -> None:
        clock = ManualClock()
        store = MemoryStore(clock=clock)
        election = Election(store, b"only", ttl=ttl)
        await within(1, election.campaign())
        lost = asyncio.create_task(election.lost.wait())
        store.set_available(False)
        clock.advance(ttl - 0.5)
        await still_pending(lost)
        assert election.is_leader
        clock.advance(0.5)
        await within(1, lost)
        assert not election.is_leader

        # etcd back: it gave the old lease a full TTL, so the new campaign waits it out.
        store.set_available(True)
        campaign = asyncio.create_task(election.campaign())
        await still_pending(campaign)
        clock.advance(ttl)
        await within(3, campaign)
        assert election.is_leader and not election.lost.is_set()
        await election.resign()

    run(body(), timeout=10)


def test_leader_steps_down_when_its_key_is_deleted_or_taken() -> None:
    async def body() -> None:
        store = MemoryStore(clock=ManualClock())
        election = Election(store, b"only", key="/test/leader", ttl=3)
        await within(1, election.campaign())
        await store.put("/test/leader-other", b"unrelated")  # same prefix, other key
        await store.delete("/test/leader")
        await within(1, election.lost.wait())
        await within(1, election.campaign())
        await store.put("/test/leader", b"usurper")
        await within(1, election.lost.wait())
        assert not election.is_leader
        await election.resign()

    run(body(), timeout=10)
