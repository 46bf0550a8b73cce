"""weir.controller.election against real etcd: one leader, take-over, step-down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

import pytest

from weir.controller.election import Election
from weir.etcd.etcd_store import EtcdStore
from weir.etcd.keys import LEADER_KEY
from weir.etcd.server import EtcdServer
from weir.etcd.store import StoreClosedError

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

    def __init__(self, endpoint: str, ttl: float) -> None:
        self.stores = [EtcdStore(endpoint), EtcdStore(endpoint)]
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


def test_two_candidates_one_leader(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        candidates = Candidates(etcd_server.endpoint, ttl=3)
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
        candidates = Candidates(etcd_server.endpoint, ttl=ttl)
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
        candidates = Candidates(etcd_server.endpoint, ttl=3)
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
