"""Which replicas a call for a multiplexed model may go to: the pure choice, then the
router's waiting around it. No network."""

from __future__ import annotations

import asyncio
import random
import time

from weir.dataplane.model_affinity import (
    MODEL_MATCH_WAIT_S,
    SENT_MODEL_TTL_S,
    model_candidates,
    refresh_sent,
    remember_sent,
)
from weir.dataplane.router import DeploymentRouter, ReplicaSlot


def slot(replica_id: str, *models: str, in_flight: int = 0, reported: int = 0) -> ReplicaSlot:
    return ReplicaSlot(replica_id, replica_id, reported=reported, in_flight=in_flight,
                       multiplexed=True, models=frozenset(models))


def ids(slots: list[ReplicaSlot]) -> list[str]:
    return [s.replica_id for s in slots]


def test_replicas_holding_the_model_come_first() -> None:
    slots = [slot("r1", "a"), slot("r2", "b"), slot("r3", "a", "b")]
    assert ids(model_candidates(slots, "a", 2, 0.0, matching=True)) == ["r1", "r3"]
    assert ids(model_candidates(slots, "b", 2, 0.0, matching=False)) == ["r2", "r3"]


def test_busy_holders_are_waited_for_then_others_take_the_call() -> None:
    slots = [slot("r1", "a", in_flight=2), slot("r2", "b", "c"), slot("r3", "d")]
    assert model_candidates(slots, "a", 2, 0.0, matching=True) == []
    # After the wait: the free replicas holding the fewest models.
    assert ids(model_candidates(slots, "a", 2, 0.0, matching=False)) == ["r3"]
    # A holder skipped (it refused a call) counts as busy too.
    slots[0].in_flight, slots[0].skip_until = 0, 5.0
    assert model_candidates(slots, "a", 2, 1.0, matching=True) == []


def test_a_model_nobody_holds_goes_to_the_replicas_with_fewest_models() -> None:
    slots = [slot("r1", "a", "b"), slot("r2", "c"), slot("r3", "d"), slot("r4", in_flight=2)]
    # r4 holds none but has no room: the free ones with the fewest models.
    assert ids(model_candidates(slots, "new", 2, 0.0, matching=True)) == ["r2", "r3"]
    assert model_candidates([slot("r1", in_flight=2)], "new", 2, 0.0, matching=True) == []


def test_where_a_call_was_sent_counts_until_the_table_speaks() -> None:
    r1, r2 = slot("r1"), slot("r2")
    remember_sent(r1, "a", now=10.0)
    assert ids(model_candidates([r1, r2], "a", 2, 10.1, matching=True)) == ["r1"]
    # ...and r1 now counts one model, so the next new model spreads to r2.
    assert ids(model_candidates([r1, r2], "b", 2, 10.1, matching=True)) == ["r2"]
    # A table that does not list it yet keeps the assumption; one that does replaces it.
    refresh_sent(r1, now=10.2)
    assert "a" in r1.sent_models
    r1.models = frozenset({"a"})
    refresh_sent(r1, now=10.3)
    assert r1.sent_models == {}
    # Unconfirmed, it lapses.
    remember_sent(r2, "c", now=20.0)
    assert ids(model_candidates([r1, r2], "c", 2, 20.0 + SENT_MODEL_TTL_S + 0.1,
                                matching=True)) == ["r2"]  # fewest models, not held
    refresh_sent(r2, now=20.0 + SENT_MODEL_TTL_S + 0.1)
    assert r2.sent_models == {}


def test_router_sends_a_model_to_its_holder_and_new_models_apart() -> None:
    async def scenario() -> None:
        router = DeploymentRouter("app", "D", rng=random.Random(3))
        router.update(4, -1, [("r1", "x", 0), ("r2", "y", 0)], {"r1": ["a"], "r2": []})
        for _ in range(10):
            s = await router.assign(None, model_id="a")
            assert s.replica_id == "r1"
            router.release(s)
        first = await router.assign(None, model_id="b")
        assert first.replica_id == "r2"  # fewest models
        router.release(first)
        for _ in range(5):  # the table does not say so yet: remembered
            s = await router.assign(None, model_id="b")
            assert s.replica_id == "r2"
            router.release(s)
        # Plain calls still go by load alone.
        picked = {(await router.assign(None)).replica_id for _ in range(8)}
        assert picked == {"r1", "r2"}

    asyncio.run(scenario())


def test_a_model_id_sent_to_replicas_that_do_not_multiplex_pins_nothing() -> None:
    # An ingress passing the header on: its calls spread by load as any others.
    async def scenario() -> set[str]:
        router = DeploymentRouter("app", "Ingress", rng=random.Random(0))
        router.update(1, -1, [("r1", "x", 0), ("r2", "y", 0)])
        first = await router.assign(None, model_id="a")
        second = await asyncio.wait_for(router.assign(None, model_id="a"), 0.05)
        assert first.sent_models == {} and second.sent_models == {}
        return {first.replica_id, second.replica_id}

    assert asyncio.run(scenario()) == {"r1", "r2"}


def test_router_waits_briefly_for_a_busy_holder_then_falls_back() -> None:
    async def scenario() -> None:
        router = DeploymentRouter("app", "D", rng=random.Random(0))
        router.update(1, -1, [("r1", "x", 0), ("r2", "y", 0)], {"r1": ["a"]})
        busy = await router.assign(None, model_id="a")
        assert busy.replica_id == "r1"
        # r1 frees up within the wait: the call goes there.
        waiting = asyncio.ensure_future(router.assign(None, model_id="a"))
        await asyncio.sleep(MODEL_MATCH_WAIT_S / 4)
        assert not waiting.done()
        router.release(busy)
        assert (await asyncio.wait_for(waiting, 1)).replica_id == "r1"
        # It stays busy: after the wait the call goes to r2.
        started = time.monotonic()
        other = await asyncio.wait_for(router.assign(None, model_id="a"), 2)
        waited = time.monotonic() - started
        assert other.replica_id == "r2"
        assert MODEL_MATCH_WAIT_S * 0.9 <= waited < MODEL_MATCH_WAIT_S + 0.5

    asyncio.run(scenario())


def test_a_refusal_forgets_where_the_model_was_sent() -> None:
    async def scenario() -> None:
        router = DeploymentRouter("app", "D", rng=random.Random(0))
        router.update(4, -1, [("r1", "x", 0)], {"r1": []})
        s = await router.assign(None, model_id="a")
        assert "a" in s.sent_models
        router.release(s, skip_for=0.01, model_id="a")
        assert s.sent_models == {}

    asyncio.run(scenario())


def test_with_no_queue_a_call_does_not_wait_for_a_busy_holder() -> None:
    async def scenario() -> str:
        router = DeploymentRouter("app", "D", rng=random.Random(0))
        router.update(1, 0, [("r1", "x", 0), ("r2", "y", 0)], {"r1": ["a"], "r2": []})
        await router.assign(None, model_id="a")  # r1 is now full
        return (await router.assign(None, model_id="a")).replica_id  # not shed: r2 is free

    assert asyncio.run(scenario()) == "r2"
