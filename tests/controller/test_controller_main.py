"""The controller process's own bookkeeping around its terms (no processes started)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from weir.controller.main import Controller
from weir.etcd.keys import LEADER_KEY
from weir.etcd.memory_store import MemoryStore

ADDRESS = "127.0.0.1:9500"


def controller(store: MemoryStore) -> Controller:
    opts = argparse.Namespace(etcd="127.0.0.1:1", packages_dir="/tmp/weir-test-packages")
    made = Controller(opts)
    made.store = store  # type: ignore[assignment]
    made.address = ADDRESS
    return made


def test_a_caller_that_sees_the_election_won_before_the_campaign_returns_waits() -> None:
    # The leader key's watchers hear of the win as soon as the campaign's own write lands:
    # they call before this process knows it leads, and must wait for the term, not be
    # refused "not the leader" (then they came back only after a backoff).
    async def scenario() -> None:
        store = MemoryStore()
        made = controller(store)
        await store.put(LEADER_KEY, json.dumps({"address": ADDRESS}).encode())
        waiting = asyncio.ensure_future(made._started_leader())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        leader: Any = object()
        made.leader = leader
        made._leading.set()
        assert await asyncio.wait_for(waiting, 5) is leader

    asyncio.run(scenario())


def test_a_standby_answers_at_once_that_it_does_not_lead() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        made = controller(store)
        assert await asyncio.wait_for(made._started_leader(), 1) is None  # no leader yet
        await store.put(LEADER_KEY, json.dumps({"address": "10.0.0.9:9500"}).encode())
        assert await asyncio.wait_for(made._started_leader(), 1) is None

    asyncio.run(scenario())
