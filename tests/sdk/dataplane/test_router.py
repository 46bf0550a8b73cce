"""The router: p2c choice (pure) and the bounded queue, with no network."""

import asyncio
import random
import time

import pytest

from weir.dataplane.router import (
    REJECTED_BACKOFF_S,
    DeploymentRouter,
    ReplicaSlot,
    choose_replica,
)
from weir.exceptions import BackPressureError, DeploymentUnavailableError


def test_p2c_prefers_less_loaded() -> None:
    rng = random.Random(0)
    slots = [ReplicaSlot("a", "x", reported=9), ReplicaSlot("b", "y", reported=0)]
    picks = {choose_replica(slots, 10, time.monotonic(), rng).replica_id for _ in range(20)}  # type: ignore[union-attr]
    assert picks == {"b"}


def test_p2c_skips_full_and_backed_off_replicas() -> None:
    now = time.monotonic()
    slots = [ReplicaSlot("a", "x", in_flight=2), ReplicaSlot("b", "y", skip_until=now + 1)]
    assert choose_replica(slots, 2, now, random.Random(0)) is None
    slots.append(ReplicaSlot("c", "z"))
    assert choose_replica(slots, 2, now, random.Random(0)).replica_id == "c"  # type: ignore[union-attr]


def test_p2c_spreads_evenly_under_equal_load() -> None:
    rng = random.Random(1)
    slots = [ReplicaSlot(str(i), str(i)) for i in range(4)]
    counts = {s.replica_id: 0 for s in slots}
    for _ in range(400):
        s = choose_replica(slots, 1000, time.monotonic(), rng)
        assert s is not None
        s.in_flight += 1
        counts[s.replica_id] += 1
    assert max(counts.values()) - min(counts.values()) <= 2


def test_seed_load_shedding_shape() -> None:
    """max_ongoing=2, max_queued=2, one replica: 2 run, 2 wait, the rest are shed at once."""

    async def scenario() -> None:
        router = DeploymentRouter("app", "D")
        router.update(2, 2, [("r1", "addr", 0)])
        running = [await router.assign(None) for _ in range(2)]
        waiters = [asyncio.ensure_future(router.assign(None)) for _ in range(2)]
        await asyncio.sleep(0)
        assert router.num_queued == 2
        for _ in range(5):
            assert router.would_shed()
            with pytest.raises(BackPressureError):
                await router.assign(None)
        router.release(running[0])
        slot = await asyncio.wait_for(waiters[0], 1)
        assert slot.replica_id == "r1" and not waiters[1].done()
        router.release(running[1])
        await asyncio.wait_for(waiters[1], 1)

    asyncio.run(scenario())


def test_would_shed_agrees_with_assign() -> None:
    async def scenario() -> None:
        unbounded = DeploymentRouter("app", "D")
        unbounded.update(1, -1, [("r1", "addr", 0)])
        await unbounded.assign(None)
        assert not unbounded.would_shed()  # no bound: it queues
        no_queue = DeploymentRouter("app", "D")
        no_queue.update(1, 0, [("r1", "addr", 0)])
        assert not no_queue.would_shed()  # a free replica
        slot = await no_queue.assign(None)
        assert no_queue.would_shed()  # full, and no room to wait
        with pytest.raises(BackPressureError):
            await no_queue.assign(None)
        no_queue.release(slot)
        assert not no_queue.would_shed()

    asyncio.run(scenario())


def test_no_replica_waits_until_deadline_then_unavailable() -> None:
    async def scenario() -> None:
        router = DeploymentRouter("app", "D")
        router.update(1, -1, [])
        with pytest.raises(DeploymentUnavailableError):
            await router.assign(time.monotonic() + 0.2)

    asyncio.run(scenario())


def test_replica_arriving_wakes_waiter() -> None:
    async def scenario() -> None:
        router = DeploymentRouter("app", "D")
        router.update(1, -1, [])
        waiter = asyncio.ensure_future(router.assign(time.monotonic() + 5))
        await asyncio.sleep(0.01)
        router.update(1, -1, [("r1", "addr", 0)])
        assert (await asyncio.wait_for(waiter, 1)).replica_id == "r1"

    asyncio.run(scenario())


def test_a_retry_is_never_shed_and_goes_first() -> None:
    async def scenario() -> None:
        router = DeploymentRouter("app", "D")
        router.update(1, 1, [("r1", "addr", 0)])
        first = await router.assign(None)
        queued = asyncio.ensure_future(router.assign(None))
        await asyncio.sleep(0)
        with pytest.raises(BackPressureError):
            await router.assign(None)
        # `first` was refused by its replica: it retries, ahead of the queued request.
        # (The data plane releases, skipping the replica, and re-assigns with no await in
        # between.)
        router.release(first, skip_for=REJECTED_BACKOFF_S)
        slot = await router.assign(None, retry=True)
        await asyncio.sleep(0.01)
        assert not queued.done()
        router.release(slot)
        await asyncio.wait_for(queued, 1)

    asyncio.run(scenario())


def test_slots_freed_together_go_to_as_many_waiters_in_one_turn() -> None:
    # Waking only the head made the freed slots go out one event-loop turn after another.
    async def scenario() -> None:
        router = DeploymentRouter("app", "D")
        router.update(2, -1, [("r1", "addr", 0)])
        held = [await router.assign(None), await router.assign(None)]
        queued = [asyncio.ensure_future(router.assign(None)) for _ in range(3)]
        await asyncio.sleep(0)
        assert router.num_queued == 3
        for slot in held:
            router.release(slot)
        assert router.num_queued == 1  # handed over at once, in order
        await asyncio.sleep(0)
        assert [task.done() for task in queued] == [True, True, False]
        router.release(queued[0].result())
        await asyncio.wait_for(queued[2], 1)

    asyncio.run(scenario())


def test_a_cancelled_waiter_gives_back_the_slot_it_was_handed() -> None:
    async def scenario() -> None:
        router = DeploymentRouter("app", "D")
        router.update(1, -1, [("r1", "addr", 0)])
        first = await router.assign(None)
        second = asyncio.ensure_future(router.assign(None))
        third = asyncio.ensure_future(router.assign(None))
        await asyncio.sleep(0)
        router.release(first)  # handed to `second`, which is cancelled before it runs
        second.cancel()
        slot = await asyncio.wait_for(third, 1)
        assert slot.in_flight == 1

    asyncio.run(scenario())


def test_removed_deployment_fails_waiting_and_new_calls() -> None:
    async def scenario() -> None:
        router = DeploymentRouter("app", "D")
        router.update(1, -1, [])
        waiter = asyncio.ensure_future(router.assign(None))
        await asyncio.sleep(0.01)
        router.remove()
        with pytest.raises(DeploymentUnavailableError, match="deleted"):
            await asyncio.wait_for(waiter, 1)
        with pytest.raises(DeploymentUnavailableError):
            await router.assign(None)
        router.update(1, -1, [("r1", "addr", 0)])
        assert (await router.assign(None)).replica_id == "r1"

    asyncio.run(scenario())
