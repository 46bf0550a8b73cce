"""The replica's session with the leading controller.

One bidi stream: the replica registers (id, address, pid, state, version), then reports its
load when it changes (at most every REPORT_MIN_INTERVAL_S; a change of state, or what a
command did, goes out at once), and a report that would say nothing new only every
IDLE_REPORT_S (`report_due`); the controller answers with commands
(`CommandKind`: INIT, RECONFIGURE, STOP). When the stream breaks, or etcd's
leader key names another leader, the replica finds the leader anew and re-registers with
its current state, so a new leader adopts it instead of starting another. Serving never
waits on this session.

A replica with a `@serve.multiplexed` loader (`weir.multiplex`) adds the models it holds to
the same reports, only when their set changed since the last report of the session (always
on the first, even if empty): the leader puts them in the route table, so that callers send
a model's calls where it is.

Health checks: the replica checks itself each health_check_period_s (`check_every`, from
the deployment's options at INIT), running the user's `check_health()` bounded by
health_check_timeout_s, and sends each outcome in a report (`health_check`) to whichever
controller leads. An unhealthy answer goes out at once; a healthy one waits up to half a
period for a report that goes out anyway (a load change) and rides on it. Each answer says
within how long the next one will come (`next_answer_within`); the leader counts a
failure for each such promise it sees broken, so a frozen process, a loop blocked by user
code or a replica cut off from the controller fails by not answering, as before. (The
leader used to ask for each check with a CHECK_HEALTH command: a message each way per
replica per period, 500 commands a second out of the leader at 5,000 replicas and as many
answers in, most of them in a report of their own.) The answer waiting
for a report is kept across streams: it is proof of health for any leader. An answer
counts as the stream's proof of life: the next idle report waits IDLE_REPORT_S from it, so
checks add no report of their own.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable

import grpc
import structlog

from weir import auth, multiplex
from weir.cancellation import within
from weir.dataplane.route_table import LeaderLocator, follow_leader
from weir.health_promise import answer_hold, next_answer_within
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc

log = structlog.get_logger("weir.replica.session")

REPORT_MIN_INTERVAL_S = 0.05
#: The longest the session sleeps between looks at what to send. It wakes when told of a
#: change (`report_soon`: every change of what a report says tells it), when its
#: registration's answer is overdue, and when an idle report is due (`next_wake`); this
#: only bounds a change it was not told of. (It woke every second: at 10,000 simulated
#: replicas, 10,000 wakes a second that found nothing to send, a quarter of the
#: simulation's CPU.)
HEARTBEAT_S = 5.0
#: A report identical to the last one sent goes out this often, to keep the stream
#: proven writable. More often it would only cost the leader: at 10,000 replicas a report
#: a second each is 10,000 messages a second saying nothing. A new leader is learnt from
#: etcd's leader key and a dead one from the stream breaking, not from these. Longer than
#: Ray's default health_check_period_s (10 s): a health check's answer is proof of life
#: too, so with checks on (the default) no idle report goes out at all (at 5 s, about 300
#: a second reached the leader at 5,000 replicas, each dropped on arrival).
IDLE_REPORT_S = 15.0
#: A registration the controller has not acknowledged by then is dropped and retried (and
#: a report it has not taken by then ends the stream). 6 s, not 3: at a failover of
#: 10,000 simulated replicas the new leader took 8 s to admit them all, and 780 to 3,000
#: of them gave up at 3 s and registered again, each retry another stream for it to set
#: up; at 6 s none did. A leader that moved is left at once anyway (`until_moved_from`).
REGISTER_TIMEOUT_S = 6.0
#: ... doubled after each registration in a row that went unanswered, up to this. A leader
#: that every replica registers with at once (a failover at thousands of replicas, on a
#: busy machine) answers late; dropping its streams to register again at once sent it the
#: same registrations again and again (up to four per replica at 5,000).
REGISTER_TIMEOUT_MAX_S = 30.0


def next_wake(now: float, sent_at: float, unanswered_at: float | None) -> float:
    """When the session looks again with nothing told (time.monotonic()): when the last
    report (sent at `sent_at`) is IDLE_REPORT_S old, when the registration's answer is
    overdue (`unanswered_at`; None: answered), and HEARTBEAT_S from `now` at the latest.
    Pure."""
    wake = min(sent_at + IDLE_REPORT_S, now + HEARTBEAT_S)
    return wake if unanswered_at is None else min(wake, unanswered_at)


async def _set_within(event: asyncio.Event, delay_s: float) -> None:
    """Wait until `event` is set, setting it once `delay_s` passed: one timer, no task
    (the session waits so for every report and every wake, thousands a second at 10,000
    replicas in one process)."""
    if event.is_set():
        return
    timer = asyncio.get_running_loop().call_later(max(0.0, delay_s), event.set)
    try:
        await event.wait()
    finally:
        timer.cancel()


def register_timeout(unanswered_in_row: int) -> float:
    """How long a registration waits for the leader's answer after `unanswered_in_row`
    registrations in a row went unanswered: REGISTER_TIMEOUT_S, doubled for each, at most
    REGISTER_TIMEOUT_MAX_S. Pure."""
    return min(REGISTER_TIMEOUT_S * 2 ** min(unanswered_in_row, 16), REGISTER_TIMEOUT_MAX_S)


#: Runs the replica's health check (the user's `check_health()` when it is RUNNING).
CheckHealth = Callable[[], Awaitable[pb.HealthCheckReply]]


def report_due(report: bytes, last_sent: bytes, since_sent_s: float,
               answering: bool = False) -> bool:
    """Whether a report (serialized, without any health-check answer) goes out now: when it
    carries an answer (`answering`), differs from the last one sent on this stream, or when
    that one is IDLE_REPORT_S old."""
    return answering or report != last_sent or since_sent_s >= IDLE_REPORT_S


async def answer_check(check_id: int, check_health: CheckHealth | None,
                       timeout_s: float | None = None) -> pb.HealthCheckAnswer:
    """Run one health check, bounded by `timeout_s` (None: unbounded), and make its answer
    (with no check to run, alive is healthy)."""
    if check_health is None:
        return pb.HealthCheckAnswer(check_id=check_id, healthy=True)
    try:
        reply = await (check_health() if timeout_s is None
                       else within(_own_errors(check_health()), timeout_s))
    except TimeoutError:  # the bound's: the check's own come as _CheckRaised
        return pb.HealthCheckAnswer(check_id=check_id, healthy=False, message=(
            f"check_health() gave no answer within health_check_timeout_s={timeout_s:g}"))
    except Exception as exc:  # the check's own failure is an answer, not a crash
        raised = exc.error if isinstance(exc, _CheckRaised) else exc
        return pb.HealthCheckAnswer(check_id=check_id, healthy=False,
                                    message=f"{type(raised).__name__}: {raised}")
    return pb.HealthCheckAnswer(check_id=check_id, healthy=reply.healthy,
                                message=reply.message)


class _CheckRaised(Exception):
    """A TimeoutError the check raised itself, kept apart from the bound's expiry."""

    def __init__(self, error: TimeoutError) -> None:
        super().__init__(str(error))
        self.error = error


async def _own_errors(check: Awaitable[pb.HealthCheckReply]) -> pb.HealthCheckReply:
    """`check`, a TimeoutError of its own raised as _CheckRaised: the TimeoutError that
    reaches `answer_check` is then the bound's alone (the time taken did not tell them
    apart: asyncio's timer may fire a clock tick before the bound, and a hung check was
    once reported as a bare "TimeoutError: ")."""
    try:
        return await check
    except TimeoutError as exc:
        raise _CheckRaised(exc) from exc


class ControllerSession:
    """Keeps the replica registered with whichever controller leads."""

    def __init__(self, replica_id: str, address: str, locator: LeaderLocator,
                 snapshot: Callable[[], pb.ReplicaReport],
                 on_command: Callable[[pb.ReplicaCommand], Awaitable[None]], *,
                 check_health: CheckHealth | None = None) -> None:
        self.replica_id = replica_id
        self.address = address
        self.locator = locator
        self.snapshot = snapshot
        self.on_command = on_command
        self.changed = asyncio.Event()
        #: Ends the hold after a report: set REPORT_MIN_INTERVAL_S after it, or at once by
        #: a change that must not wait (`report_soon(urgent=True)`).
        self._hold_over = asyncio.Event()
        #: Set once the leader has taken the current session's registration.
        self.registered = asyncio.Event()
        #: The multiplexed models last reported on the current stream (None: none yet).
        self._sent_models: list[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.check_health = check_health
        #: Registrations in a row that went unanswered (`register_timeout`).
        self._unanswered_in_row = 0
        #: The newest check's answer, waiting for the next report (of any stream), and
        #: when it goes out alone if no report has taken it by then (time.monotonic()).
        self._answer: pb.HealthCheckAnswer | None = None
        self._answer_due = 0.0
        self._checker: asyncio.Task[None] | None = None
        multiplex.watch_models(self._models_changed)

    def report_soon(self, urgent: bool = False) -> None:
        """Load or state changed: send a report shortly. `urgent`: the replica's state
        changed (or a command was carried out): send it without waiting out the
        REPORT_MIN_INTERVAL_S since the last report, which only spaces out load reports (a
        replica turning RUNNING right after it reported INITIALIZING waited up to 50 ms
        to be routed to)."""
        self.changed.set()
        if urgent:
            self._hold_over.set()

    def _models_changed(self) -> None:
        """A model cache changed (on the loop its loader runs on: normally the replica's)."""
        loop = self._loop
        if loop is None:
            return  # not running yet: the first report carries them
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.report_soon()
        else:
            loop.call_soon_threadsafe(self.report_soon)

    def _report(self) -> pb.ReplicaReport:
        report = self.snapshot()
        report.replica_id = self.replica_id
        report.address = self.address
        report.pid = os.getpid()
        models = multiplex.held_model_ids()
        if multiplex.multiplexes() and models != self._sent_models:
            report.multiplexed_models.SetInParent()  # present even when now empty
            report.multiplexed_models.model_ids.extend(models)
            self._sent_models = models
        return report

    async def run(self) -> None:
        """Hold the session until cancelled, reconnecting as needed."""
        self._loop = asyncio.get_running_loop()
        try:
            await follow_leader(self.locator, self._hold, "controller session")
        finally:
            if self._checker is not None:
                self._checker.cancel()

    def check_every(self, period_s: float, timeout_s: float) -> None:
        """Check this replica's health each `period_s` (the first a period from now), each
        check bounded by `timeout_s` (its deployment's health_check_period_s and
        health_check_timeout_s), and report each outcome. Called again, the new schedule
        replaces the old one."""
        if self._checker is not None:
            self._checker.cancel()
        self._checker = asyncio.get_running_loop().create_task(
            self._run_checks(period_s, timeout_s))

    async def _run_checks(self, period_s: float, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        promise = next_answer_within(period_s, timeout_s)
        started = loop.time()
        for check_id in itertools.count(1):
            await asyncio.sleep(max(0.0, started + period_s - loop.time()))
            started = loop.time()
            answer = await answer_check(check_id, self.check_health, timeout_s)
            answer.next_within_s = promise
            self._answer = answer
            if answer.healthy:
                hold = answer_hold(period_s)
                self._answer_due = time.monotonic() + hold
                loop.call_later(hold, self.report_soon)
            else:
                self._answer_due = time.monotonic()
                self.report_soon(urgent=True)

    async def _space_reports(self) -> None:
        """Wait REPORT_MIN_INTERVAL_S after a report, or less if an urgent change came."""
        await _set_within(self._hold_over, REPORT_MIN_INTERVAL_S)
        self._hold_over.clear()

    async def _wake(self, at: float) -> None:
        """Wait until told of a change (`changed`, also set when the stream's reader or the
        leader watch ends) or until `at` (time.monotonic())."""
        await _set_within(self.changed, at - time.monotonic())

    async def _hold(self, address: str) -> None:
        self._sent_models = None  # a new stream: the leader hears the models anew
        async with auth.channel(address) as channel:
            call = pb_grpc.ControllerStub(channel).ReplicaSession()
            first = self._report()
            if not await self._write(call, address, first):
                return
            last_sent, sent_at = first.SerializeToString(), time.monotonic()
            log.info("registered with controller", controller=address)
            self.registered = asyncio.Event()
            reader = asyncio.get_running_loop().create_task(self._read(call))
            moved = asyncio.get_running_loop().create_task(self.locator.until_moved_from(address))
            unanswered = time.monotonic() + register_timeout(self._unanswered_in_row)
            for task in (reader, moved):
                task.add_done_callback(lambda _: self.changed.set())
            try:
                while not reader.done():
                    await self._wake(next_wake(time.monotonic(), sent_at, None
                                               if self.registered.is_set() else unanswered))
                    if moved.done():
                        return  # that controller no longer leads: find the one that does
                    if not self.registered.is_set() and time.monotonic() >= unanswered:
                        log.info("registration unanswered; reconnecting", controller=address,
                                 waited_s=register_timeout(self._unanswered_in_row))
                        self._unanswered_in_row += 1
                        return
                    if reader.done():
                        break
                    # Clear before taking the snapshot: a change after this point is caught
                    # by the next report.
                    self.changed.clear()
                    report = self._report()
                    wire = report.SerializeToString()
                    # A held answer goes with any report that goes out, and alone once
                    # its hold is over (not at a heartbeat's wake before then).
                    answer = self._answer
                    if not report_due(wire, last_sent, time.monotonic() - sent_at,
                                      answering=answer is not None
                                      and time.monotonic() >= self._answer_due):
                        continue
                    if answer is not None:
                        self._answer = None
                        report.health_check.CopyFrom(answer)
                    if not await self._write(call, address, report):
                        if answer is not None and self._answer is None:
                            self._answer = answer  # for the next stream
                        return
                    last_sent, sent_at = wire, time.monotonic()
                    await self._space_reports()
                await reader
            finally:
                reader.cancel()
                moved.cancel()
                call.cancel()

    async def _write(self, call: grpc.aio.StreamStreamCall, address: str,
                     report: pb.ReplicaReport) -> bool:
        """Send `report`; False if the controller did not take it in time (a stream to a
        controller that is going away can block a write forever)."""
        try:
            await within(call.write(report), REGISTER_TIMEOUT_S)
        except TimeoutError:
            log.info("controller stopped taking reports; reconnecting", controller=address)
            return False
        except asyncio.InvalidStateError:
            # The controller ended the stream (a leader stepping down ends them all): the
            # same as a stream that stopped taking reports, not a failure to log.
            log.info("controller ended the session; reconnecting", controller=address)
            return False
        return True

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        async for command in call:
            if command.kind == pb.REGISTERED:
                self.registered.set()
                self._unanswered_in_row = 0
                continue
            try:
                await self.on_command(command)
            except Exception:
                log.error("command failed", kind=pb.CommandKind.Name(command.kind), exc_info=True)
            self.report_soon(urgent=True)
