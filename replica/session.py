"""The replica's session with the leading controller.

One bidi stream: the replica registers (id, address, pid, state, version), then reports its
load when it changes (at most every REPORT_MIN_INTERVAL_S), and a report that would say
nothing new only every IDLE_REPORT_S (`report_due`); the controller answers with commands
(`CommandKind`: INIT, RECONFIGURE, STOP). When the stream breaks, or etcd's leader key
names another leader, the replica finds the leader anew and re-registers with its current
state, so a new leader adopts it instead of starting another. Serving never waits
on this session.

A replica with a `@serve.multiplexed` loader (`weir.multiplex`) adds the models it holds to
the same reports, only when their set changed since the last report of the session (always
on the first, even if empty): the leader puts them in the route table, so that callers send
a model's calls where it is.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import grpc
import structlog

from weir import auth, multiplex
from weir.dataplane.route_table import LeaderLocator, follow_leader
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc

log = structlog.get_logger("weir.replica.session")

REPORT_MIN_INTERVAL_S = 0.05
#: How often the session wakes to look for a change it was not told of, and checks that
#: its registration was answered.
HEARTBEAT_S = 1.0
#: A report identical to the last one sent goes out this often, to keep the stream
#: proven writable. More often it would only cost the leader: at 10,000 replicas a report
#: a second each is 10,000 messages a second saying nothing. A new leader is learnt from
#: etcd's leader key and a dead one from the stream breaking, not from these.
IDLE_REPORT_S = 5.0
#: A registration the controller has not acknowledged by then is dropped and retried.
REGISTER_TIMEOUT_S = 3.0


def report_due(report: bytes, last_sent: bytes, since_sent_s: float) -> bool:
    """Whether a report (serialized) goes out now: when it differs from the last one sent
    on this stream, or when that one is IDLE_REPORT_S old."""
    return report != last_sent or since_sent_s >= IDLE_REPORT_S


class ControllerSession:
    """Keeps the replica registered with whichever controller leads."""

    def __init__(self, replica_id: str, address: str, locator: LeaderLocator,
                 snapshot: Callable[[], pb.ReplicaReport],
                 on_command: Callable[[pb.ReplicaCommand], Awaitable[None]]) -> None:
        self.replica_id = replica_id
        self.address = address
        self.locator = locator
        self.snapshot = snapshot
        self.on_command = on_command
        self.changed = asyncio.Event()
        #: Set once the leader has taken the current session's registration.
        self.registered = asyncio.Event()
        #: The multiplexed models last reported on the current stream (None: none yet).
        self._sent_models: list[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        multiplex.watch_models(self._models_changed)

    def report_soon(self) -> None:
        """Load or state changed: send a report shortly."""
        self.changed.set()

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
        await follow_leader(self.locator, self._hold, "controller session")

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
            unanswered = time.monotonic() + REGISTER_TIMEOUT_S
            try:
                while not reader.done():
                    waiter = asyncio.get_running_loop().create_task(self.changed.wait())
                    done, _ = await asyncio.wait({reader, waiter, moved}, timeout=HEARTBEAT_S,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if moved in done:
                        return  # that controller no longer leads: find the one that does
                    if not self.registered.is_set() and time.monotonic() > unanswered:
                        log.info("registration unanswered; reconnecting", controller=address)
                        return
                    if reader in done:
                        break
                    # Clear before taking the snapshot: a change after this point is caught
                    # by the next report.
                    self.changed.clear()
                    report = self._report()
                    wire = report.SerializeToString()
                    if not report_due(wire, last_sent, time.monotonic() - sent_at):
                        continue
                    if not await self._write(call, address, report):
                        return
                    last_sent, sent_at = wire, time.monotonic()
                    await asyncio.sleep(REPORT_MIN_INTERVAL_S)
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
            await asyncio.wait_for(call.write(report), REGISTER_TIMEOUT_S)
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
                continue
            try:
                await self.on_command(command)
            except Exception:
                log.error("command failed", kind=pb.CommandKind.Name(command.kind), exc_info=True)
            self.report_soon()
