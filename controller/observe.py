"""Observation: what the leader sees of one replica now, as plain data.

Design. A replica is known from four sources, none of which the leader owns: its etcd
record (written before its launch), the last report on its session, whether its process is
alive, and the last health check the leader ran on it. `observe` turns them into the
`ReplicaView` that planning and status read. It is pure: the caller reads the clock, the
process table and the sessions, and passes them in.

What cannot be re-read anywhere lives in a `ReplicaBook`: a STOP already sent (so it is not
sent twice and an overdue one is killed), a RECONFIGURE not yet acknowledged, and the last
state a replica reported before its session dropped. `observe` returns the updated book
and the caller decides whether to keep it: the reconcile pass does, a status query does
not, so asking for status never changes what status later says.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from weir.controller.reconciler import ReplicaView
from weir.etcd.records import ReplicaRecord

#: Observed states besides the ones replicas report (`weir.protos` `ReplicaState`):
#: launched and not registered yet; the process is gone; it failed a health check.
PENDING = "PENDING"
DEAD = "DEAD"
UNHEALTHY = "UNHEALTHY"
RUNNING = "RUNNING"
FAILED = "FAILED"
STOPPING = "STOPPING"

#: A launched replica that has not registered by then is FAILED: counted from its launch, or
#: from when this leader first viewed it if later (after a failover at thousands of
#: replicas on a busy machine, re-registering takes a while; counted from the launch, a new
#: leader failed and replaced replicas that were running and simply had not come back yet).
REGISTER_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SessionReport:
    """The last report on a replica's session, as plain data."""

    connected: bool
    #: A `ReplicaState` name: STARTING, INITIALIZING, RUNNING, FAILED, STOPPING.
    state: str
    message: str = ""
    address: str = ""
    ongoing: int = 0
    user_config_json: str = ""


@dataclass(frozen=True)
class ReplicaBook:
    """Observations of one replica that cannot be re-read (see the module docstring)."""

    #: Monotonic time by which a replica told to stop must be gone (None: not stopping).
    stop_deadline: float | None = None
    #: A RECONFIGURE for this user_config was sent and not acknowledged yet.
    pending_user_config: str | None = None
    #: The last state the replica reported (kept while its session is down).
    last_state: str = PENDING
    was_running: bool = False
    #: Its node's agent has listed it running (an absence later means it ended).
    listed: bool = False
    #: Wall time this leader first viewed it (None: not yet).
    first_seen: float | None = None


def observe(
    record: ReplicaRecord,
    report: SessionReport | None,
    *,
    alive: bool,
    gone_reason: str = "",
    book: ReplicaBook,
    health_failure: str = "",
    wall_now: float,
    mono_now: float,
) -> tuple[ReplicaView, ReplicaBook]:
    """The view of one replica now, and its book updated by what was seen.

    `alive`: whether its process runs (if not, `gone_reason` may say why, e.g. its node is
    gone). `health_failure`: why its last health check failed
    ("" if it passed or none ran); a RUNNING replica that failed one is UNHEALTHY.
    """
    message = ""
    connected = report is not None and report.connected
    # A session that dropped keeps its last report: the newest word of the replica's state,
    # even if no pass viewed it while it was up (a replica can report RUNNING, be listed
    # so, and die before the next pass).
    last_state = report.state if report is not None else book.last_state
    if report is not None and report.connected:
        state, user_config, message = report.state, report.user_config_json, report.message
    elif not alive:
        state, user_config = DEAD, ""
    else:
        # The user_config it last said it applied: a replica keeps it while its session
        # is down ("" if it never reported to this leader: unknown, never reconfigured).
        state = last_state
        user_config = report.user_config_json if report is not None else ""
        if state == PENDING and wall_now - max(record.started_at,
                                               book.first_seen or wall_now) > REGISTER_TIMEOUT_S:
            state = FAILED
            message = (f"replica {record.replica_id} did not register within "
                       f"{REGISTER_TIMEOUT_S:.0f} s")
    if state == RUNNING and health_failure:
        state = UNHEALTHY
        message = f"replica {record.replica_id} failed its health check: {health_failure}"
    was_running = book.was_running or last_state == RUNNING
    pending = None if book.pending_user_config == user_config else book.pending_user_config
    # Every pass observes every replica, and most books do not change: no copy then.
    first_seen = wall_now if book.first_seen is None else book.first_seen
    new_book = book if (last_state, was_running, pending, first_seen) == (
        book.last_state, book.was_running, book.pending_user_config, book.first_seen
    ) else replace(book, last_state=last_state, was_running=was_running,
                   pending_user_config=pending, first_seen=first_seen)
    if state == DEAD and not message:
        message = (f"replica {record.replica_id} died unexpectedly" if new_book.was_running
                   else f"replica {record.replica_id} exited before it was running")
        if gone_reason:
            message += f": {gone_reason}"
    stopping = book.stop_deadline is not None
    view = ReplicaView(
        replica_id=record.replica_id, app=record.app, deployment=record.deployment,
        version=record.version, state=state, user_config_json=user_config,
        stopping=stopping, stop_overdue=stopping and mono_now > (book.stop_deadline or 0.0),
        pending_user_config=new_book.pending_user_config, message=message,
        last_state=book.last_state, ongoing=report.ongoing if connected and report else 0,
    )
    return view, new_book
