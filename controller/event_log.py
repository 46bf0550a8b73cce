"""The cluster's recent events: deploys, deletes, failures and recoveries, failovers.

Design. The leader is the one writer: it knows when a term starts, when a deploy or delete
is accepted, and it computes every status on each pass, so a change of an application's or
a deployment's status is an event (`status_events`, a pure diff of two passes). Events are
one etcd key each under EVENTS_PREFIX, named by time so that a prefix read returns them in
order, and trimmed to the last EVENT_LIMIT: the log is for "what just happened" on the
status page, not an audit trail, and etcd is no place for an unbounded one.

Writing is best effort. An event lost because etcd is away is a gap in the page, never a
failed deploy or a stalled reconcile pass; so `EventLog.record` logs and returns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from weir.controller.record_writer import RECORDS_PER_WRITE
from weir.etcd.keys import EVENTS_PREFIX
from weir.etcd.store import Store, StoreError

log = structlog.get_logger("weir.controller.event_log")

#: How many events etcd keeps.
EVENT_LIMIT = 200
#: Trim once this many more were written: one prefix read per batch, not per event.
TRIM_SLACK = 20


@dataclass(frozen=True)
class Event:
    """One thing that happened: `kind` is deploy, delete, leader, status or node."""

    time: float
    kind: str
    message: str
    app: str = ""

    def to_bytes(self) -> bytes:
        """The etcd value."""
        return json.dumps(asdict(self)).encode()


def _statuses(applications: Mapping[str, Any]) -> dict[tuple[str, str], tuple[str, str]]:
    """(app, deployment or "") -> (status, message) of a status document's applications."""
    out = {}
    for name, app in applications.items():
        status = app.get("app_status", {})
        out[(name, "")] = (status.get("status", ""), status.get("message", ""))
        for dep in app.get("deployment_statuses", []):
            out[(name, dep["name"])] = (dep.get("status", ""), dep.get("message", ""))
    return out


def status_events(previous: Mapping[str, Any] | None, current: Mapping[str, Any],
                  now: float) -> list[Event]:
    """The events between two passes' `applications` documents: every application or
    deployment whose status changed (None for `previous`: a term's first pass, which
    reports nothing, since what it sees is no change). Pure."""
    if previous is None:
        return []
    before, after = _statuses(previous), _statuses(current)
    events = []
    for (app, deployment), (status, message) in sorted(after.items()):
        old = before.get((app, deployment))
        if old is not None and old[0] == status:
            continue
        if old is None and status in ("DEPLOYING", "UPDATING", "HEALTHY", "NOT_STARTED"):
            continue  # a new app's first steps: its deploy event says it already
        what = f"deployment {deployment!r}" if deployment else "application"
        text = f"{what} {(old[0] + ' -> ') if old else ''}{status}"
        events.append(Event(now, "status", f"{text}: {message}" if message else text, app))
    return events


def node_events(dead_before: Mapping[str, Any], dead_now: Mapping[str, Any],
                now: float) -> list[Event]:
    """A node found dead since the last pass is an event (its replicas move). Pure."""
    return [Event(now, "node", f"node {node_id!r} is gone; its replicas are placed again")
            for node_id in sorted(set(dead_now) - set(dead_before))]


def event_key(at_ns: int, index: int = 0) -> str:
    """The etcd key of an event written at `at_ns` (ordered by time, then index)."""
    return f"{EVENTS_PREFIX}{at_ns:020d}-{index:03d}"


def keys_to_trim(keys: list[str], limit: int = EVENT_LIMIT) -> list[str]:
    """The oldest keys past `limit` (keys as etcd returns them, in order). Pure."""
    return keys[:-limit] if limit and len(keys) > limit else []


class EventLog:
    """Writes events to etcd (the leader's), trimming to the last EVENT_LIMIT."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time,
                 limit: int = EVENT_LIMIT) -> None:
        self.store = store
        self.clock = clock
        self.limit = limit
        self._since_trim = TRIM_SLACK  # trim on the first write of a term

    async def record(self, *events: Event) -> None:
        """Write `events`; best effort (see the module's docstring)."""
        if not events:
            return
        at = time.time_ns()
        try:
            for i, event in enumerate(events):
                await self.store.put(event_key(at, i), event.to_bytes())
                log.info("event", kind=event.kind, app=event.app, message=event.message)
            self._since_trim += len(events)
            if self._since_trim >= TRIM_SLACK:
                await self.trim()
        except StoreError as exc:
            log.warning("could not record events", error=str(exc), count=len(events))

    async def note(self, kind: str, message: str, app: str = "") -> None:
        """Record one event happening now."""
        await self.record(Event(self.clock(), kind, message, app))

    async def trim(self) -> None:
        """Delete the oldest events past the limit."""
        items, _ = await self.store.get_prefix(EVENTS_PREFIX)
        old = keys_to_trim([kv.key for kv in items], self.limit)
        # RECORDS_PER_WRITE to a transaction, not a round trip (and, on a term's fenced
        # store, a read of each key) per event.
        for i in range(0, len(old), RECORDS_PER_WRITE):
            await self.store.commit(deletes=old[i:i + RECORDS_PER_WRITE])
        self._since_trim = 0


async def read_events(store: Store, limit: int = 0) -> list[dict[str, Any]]:
    """The events kept, oldest first; the latest `limit` of them (0: all)."""
    items, _ = await store.get_prefix(EVENTS_PREFIX)
    events = [json.loads(kv.value) for kv in items]
    return events[-limit:] if limit else events
