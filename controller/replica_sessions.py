"""Replica sessions: the leader's side of each replica's bidi stream.

A replica registers on its first report; the leader answers REGISTERED, then whatever
commands the reconcile pass queues for it (INIT, RECONFIGURE, STOP). Later reports update
what the leader sees of it (a report carries the replica's multiplexed models only when
they changed, so they are kept apart from the last report). A session ends when the
replica hangs up or the term of leadership ends; the replica then finds the next leader
and registers again.

This module only moves messages: who a replica is and what it must run is decided by the
leader, through the `admit` callback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import structlog

from weir.controller.observe import SessionReport
from weir.protos import weir_pb2 as pb

log = structlog.get_logger("weir.controller.sessions")

#: What the leader answers a registration with: the first commands to queue, or None to
#: refuse (an unknown replica: it is told to stop).
Admit = Callable[[pb.ReplicaReport], Awaitable[list[pb.ReplicaCommand] | None]]
#: Takes the outcome of a replica's health check (its id, and the answer a report carried:
#: `weir.controller.health_prober`).
OnAnswer = Callable[[str, pb.HealthCheckAnswer], None]


def says_nothing_new(last: pb.ReplicaReport, report: pb.ReplicaReport) -> bool:
    """Whether `report` repeats `last` (a replica's idle heartbeat): same state, load,
    address, config and models. The models count only when `report` carries them (a
    report carries them only when they changed, or on registration)."""
    if report == last:
        return True
    if report.HasField("multiplexed_models") or not last.HasField("multiplexed_models"):
        return False
    bare = pb.ReplicaReport()
    bare.CopyFrom(last)
    bare.ClearField("multiplexed_models")
    return report == bare


#: What a report changed: "state" (its state, or the models it holds: the routes change at
#: once, and a pass comes), "load" (its ongoing count alone: only the routes' load and the
#: autoscaler read it), "other" (anything else: its config acknowledged, its message...).
ReportChange = Literal["state", "load", "other"]


def report_change(last: pb.ReplicaReport, report: pb.ReplicaReport,
                  models_changed: bool) -> ReportChange:
    """What `report` changed since `last` (the two differ); `models_changed`: the models it
    holds changed. Pure (`report` is compared field by field as it is)."""
    if models_changed or report.state != last.state:
        return "state"
    if report.ongoing != last.ongoing and not report.HasField("multiplexed_models"):
        ongoing = report.ongoing
        report.ongoing = last.ongoing
        same = report == last
        report.ongoing = ongoing
        if same:
            return "load"
    return "other"


@dataclass
class Session:
    """A replica's live session, as the leader holds it."""

    replica_id: str
    report: pb.ReplicaReport
    #: The commands to send; None ends the session.
    commands: asyncio.Queue[pb.ReplicaCommand | None] = field(default_factory=asyncio.Queue)
    connected: bool = True
    #: The multiplexed models it last reported holding (None: it does not multiplex).
    model_ids: tuple[str, ...] | None = None
    #: `report_of`'s answer for the report and connection it was made from: every pass
    #: asks for every replica's, and most have not reported anything new since.
    plain: tuple[pb.ReplicaReport, bool, SessionReport] | None = None

    def take(self, report: pb.ReplicaReport) -> bool:
        """A new report on the session; True if it changed the models the replica holds."""
        self.report = report
        if report.HasField("multiplexed_models"):
            held = tuple(report.multiplexed_models.model_ids)
            changed = held != self.model_ids
            self.model_ids = held
            return changed
        return False


class ReplicaSessions:
    """Every replica session of one term of leadership."""

    def __init__(self, ended: asyncio.Event, on_report: Callable[[str, ReportChange], None],
                 on_answer: OnAnswer | None = None) -> None:
        self._ended = ended
        #: Called on every report that says something new, with the replica's id and what
        #: changed; on registering and when the session ends, with "state".
        self._on_report = on_report
        #: Called with every health-check answer a report carries.
        self._on_answer = on_answer
        self.sessions: dict[str, Session] = {}
        #: Sessions opened and not yet registered (or refused): a new leader's adoption is
        #: still under way while any are (at 10,000 replicas all 10,000 are, for seconds).
        self.registering = 0

    def report_of(self, replica_id: str) -> SessionReport | None:
        """The last report of a replica, as plain data (None: it never registered)."""
        sess = self.sessions.get(replica_id)
        if sess is None:
            return None
        rep = sess.report
        if sess.plain is not None and sess.plain[0] is rep and sess.plain[1] == sess.connected:
            return sess.plain[2]
        plain = SessionReport(connected=sess.connected, state=pb.ReplicaState.Name(rep.state),
                              message=rep.message, address=rep.address, ongoing=rep.ongoing,
                              user_config_json=rep.user_config_json)
        sess.plain = (rep, sess.connected, plain)
        return plain

    def model_ids(self, replica_id: str) -> tuple[str, ...] | None:
        """The multiplexed models a replica last reported holding (loaded or loading); None
        if it does not multiplex (it has no `@serve.multiplexed` loader)."""
        sess = self.sessions.get(replica_id)
        return sess.model_ids if sess is not None else None

    def connected(self, replica_id: str) -> bool:
        """Whether the replica's session is up now."""
        sess = self.sessions.get(replica_id)
        return sess is not None and sess.connected

    def send(self, replica_id: str, command: pb.ReplicaCommand) -> bool:
        """Queue a command for a connected replica; False if it is not connected."""
        sess = self.sessions.get(replica_id)
        if sess is None or not sess.connected:
            return False
        sess.commands.put_nowait(command)
        return True

    def drop(self, replica_id: str) -> None:
        """Forget a replica's session (its record is gone)."""
        self.sessions.pop(replica_id, None)

    def end(self) -> None:
        """This term ended: every session counts as disconnected."""
        for sess in self.sessions.values():
            sess.connected = False

    async def hold(self, reports: AsyncIterator[pb.ReplicaReport],
                   admit: Admit) -> AsyncIterator[pb.ReplicaCommand]:
        """Hold one replica's session: take its reports, send its commands."""
        self.registering += 1
        try:
            first = await anext(aiter(reports), None)
            if first is None:
                return  # hung up before registering (a replica reconnecting at once, say)
            initial = await admit(first)
        finally:
            self.registering -= 1
        if initial is None:
            log.warning("unknown replica registered; stopping it", replica_id=first.replica_id)
            yield pb.ReplicaCommand(kind=pb.STOP, graceful_shutdown_timeout_s=5)
            return
        sess = Session(first.replica_id, report=first)
        sess.take(first)
        self.sessions[first.replica_id] = sess
        # Debug: at a failover every replica registers at once, and a line each was 7 %
        # of the new leader's loop at 5,000 (the leader logs the adoption as a whole).
        log.debug("replica registered", replica_id=first.replica_id,
                  state=pb.ReplicaState.Name(first.state), address=first.address)
        yield pb.ReplicaCommand(kind=pb.REGISTERED)
        for first_command in initial:
            sess.commands.put_nowait(first_command)

        async def read() -> None:
            async for report in reports:
                if report.HasField("health_check"):
                    # The answer is the prober's alone: kept in the last report, it would
                    # make the next idle one look new.
                    if self._on_answer is not None:
                        self._on_answer(sess.replica_id, report.health_check)
                    report.ClearField("health_check")
                if says_nothing_new(sess.report, report):
                    # Nothing for the routes or the pass (at 10,000 replicas, 2,000 of
                    # these a second marked their deployments' routes dirty for nothing).
                    continue
                last = sess.report
                models_changed = sess.take(report)
                # A new model set goes out at once, as a state change does (not load-only).
                self._on_report(sess.replica_id, report_change(last, report, models_changed))

        loop = asyncio.get_running_loop()
        reader = loop.create_task(read())
        self._on_report(first.replica_id, "state")
        ended = loop.create_task(self._ended.wait())
        # The reader's end and the term's put None in the queue, so the loop waits on the
        # queue alone: a task and an asyncio.wait per command were 5 % of the leader's time
        # when every health check was a command.
        for task in (reader, ended):
            task.add_done_callback(lambda _: sess.commands.put_nowait(None))
        try:
            while (command := await sess.commands.get()) is not None:
                yield command
        finally:
            reader.cancel()
            ended.cancel()
            if self.sessions.get(first.replica_id) is sess:
                sess.connected = False
            self._on_report(first.replica_id, "state")
