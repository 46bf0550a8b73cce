"""The event log: status changes as events (pure), and the bounded log in a memory etcd."""

from __future__ import annotations

import asyncio
from typing import Any

from weir.controller.event_log import (
    Event,
    EventLog,
    event_key,
    keys_to_trim,
    node_events,
    read_events,
    status_events,
)
from weir.etcd.memory_store import MemoryStore


def _apps(app: str, dep: str, message: str = "") -> dict[str, Any]:
    return {"a": {"app_status": {"status": app, "message": message},
                  "deployment_statuses": [{"name": "D", "status": dep, "message": message}]}}


def test_a_terms_first_pass_reports_nothing() -> None:
    assert status_events(None, _apps("RUNNING", "HEALTHY"), 1.0) == []


def test_unchanged_statuses_report_nothing() -> None:
    assert status_events(_apps("RUNNING", "HEALTHY"), _apps("RUNNING", "HEALTHY"), 1.0) == []


def test_a_failure_and_its_recovery_are_events_with_the_reason() -> None:
    failing = status_events(_apps("RUNNING", "HEALTHY"),
                            _apps("RUNNING", "UNHEALTHY", "replica died"), 5.0)
    assert failing == [Event(5.0, "status",
                             "deployment 'D' HEALTHY -> UNHEALTHY: replica died", "a")]
    back = status_events(_apps("RUNNING", "UNHEALTHY"), _apps("RUNNING", "HEALTHY"), 6.0)
    assert [e.message for e in back] == ["deployment 'D' UNHEALTHY -> HEALTHY"]


def test_a_new_app_reports_only_what_is_news() -> None:
    events = status_events({}, _apps("DEPLOY_FAILED", "UNHEALTHY", "boom"), 1.0)
    assert [e.message for e in events] == ["application DEPLOY_FAILED: boom",
                                           "deployment 'D' UNHEALTHY: boom"]
    assert status_events({}, _apps("DEPLOYING", "UPDATING"), 1.0) == []


def test_a_node_found_dead_is_one_event() -> None:
    assert [e.message for e in node_events({"n1": 1}, {"n1": 1, "n2": 2}, 3.0)] == [
        "node 'n2' is gone; its replicas are placed again"]


def test_keys_to_trim_drops_the_oldest() -> None:
    keys = [event_key(i) for i in range(5)]
    assert keys == sorted(keys)
    assert keys_to_trim(keys, 3) == keys[:2]
    assert keys_to_trim(keys, 10) == []


def test_the_log_keeps_the_last_events_in_order() -> None:
    async def scenario() -> list[dict[str, Any]]:
        store = MemoryStore()
        log = EventLog(store, clock=lambda: 7.0, limit=30)
        for i in range(60):
            await log.note("deploy", f"deploy {i}", app="a")
        await log.trim()
        return await read_events(store)

    events = asyncio.run(scenario())
    assert len(events) == 30
    assert [e["message"] for e in events] == [f"deploy {i}" for i in range(30, 60)]
    assert events[0] == {"time": 7.0, "kind": "deploy", "message": "deploy 30", "app": "a"}


def test_a_terms_first_write_trims_more_than_one_transaction_takes() -> None:
    async def scenario() -> list[dict[str, Any]]:
        store = MemoryStore()
        earlier = EventLog(store, clock=lambda: 1.0, limit=0)  # a term that never trimmed
        for i in range(250):
            await earlier.note("deploy", f"deploy {i}", app="a")
        log = EventLog(store, clock=lambda: 2.0, limit=10)
        await log.note("deploy", "deploy 250", app="a")  # the term's first write trims
        return await read_events(store)

    events = asyncio.run(scenario())
    assert [e["message"] for e in events] == [f"deploy {i}" for i in range(241, 251)]
