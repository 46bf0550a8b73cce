"""A process's way to call deployments: the route table subscription, one router per
deployment, and the transport. The proxy has one; so does every process that uses handles
(a replica, a driver script).

Retries follow one rule: a call is retried on another replica only when it never started
(the replica refused it, was draining, or could not be reached), never after it started.
A body that streams is handed over only once a replica admitted the call (`RequestBody`), so
the retry of a refused call still sends the whole body.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
import structlog

from weir import tracing
from weir.cancellation import event_within
from weir.dataplane.queue_report import QueueReporter
from weir.dataplane.request_body import RequestBody
from weir.dataplane.route_table import LeaderLocator, RouteTable, RouteTableSubscriber
from weir.dataplane.router import (
    REJECTED_BACKOFF_S,
    UNREACHABLE_BACKOFF_S,
    DeploymentRouter,
    ReplicaSlot,
)
from weir.dataplane.transport import ReplicaCallFailed, ReplicaTransport, ReplicaUnreachable
from weir.exceptions import DeploymentUnavailableError, RequestTimeoutError
from weir.metrics import handle_metrics
from weir.multiplex import request_model_id
from weir.protos import weir_pb2 as pb
from weir.runtime_context import replica_context_or_none

log = structlog.get_logger("weir.dataplane.caller")

#: With no deadline, how long a call waits for the route table to name its deployment.
UNKNOWN_DEPLOYMENT_WAIT_S = 30.0
_NEVER_STARTED = (pb.REJECTED, pb.UNAVAILABLE)
#: Outcomes of a call the replica ran to its end.
_RAN = (pb.OK, pb.USER_ERROR)


def unix_deadline(deadline: float | None) -> float:
    """A monotonic deadline as the UNIX time carried on the wire (0: none)."""
    return 0.0 if deadline is None else time.time() + (deadline - time.monotonic())


class DataPlane:
    """Routes calls from this process to replicas."""

    def __init__(self, locator: LeaderLocator, subscriber: str) -> None:
        self.transport = ReplicaTransport()
        self.routers: dict[tuple[str, str], DeploymentRouter] = {}
        self.queues = QueueReporter(subscriber, lambda: self.routers)
        self.subscriber = RouteTableSubscriber(locator, subscriber, self._on_table,
                                               companions=[self.queues.run_on])
        self._table_changed = asyncio.Event()
        #: Each deployment's targets as the routers last took them (by identity).
        self._applied: dict[tuple[str, str], pb.DeploymentTargets] = {}

    @property
    def table(self) -> RouteTable | None:
        """The last route table received."""
        return self.subscriber.table

    def start(self) -> None:
        """Start following the route table (on the running loop)."""
        self.subscriber.start()

    async def close(self) -> None:
        """Stop following the table and close channels."""
        await self.subscriber.stop()
        await self.transport.close()

    def _on_table(self, table: RouteTable) -> None:
        applied, self._applied = self._applied, {}
        change = table.change
        for key, targets in table.deployments.items():
            self._applied[key] = targets
            before = applied.get(key)
            # A change of load alone, to the deployment this router took last: set those
            # replicas' counts (most versions; a rebuild was 9 ms at 10,000 replicas).
            # Its object may be the same as before: the counts are set in place.
            loads = change.loads.get(key) if change is not None else None
            if loads is not None and before is not None and change is not None \
                    and change.before.get(key) is before:
                self.router(*key).set_reported(loads)
                continue
            # A delta leaves the deployments it does not change as the same objects
            # (`apply_delta`): their routers are up to date already.
            if before is targets:
                continue
            self.router(*key).update(
                targets.max_ongoing_requests,
                targets.max_queued_requests,
                [(r.replica_id, r.address, r.ongoing) for r in targets.replicas],
                {r.replica_id: r.multiplexed_model_ids for r in targets.replicas
                 if r.multiplexed},
            )
        for key, router in self.routers.items():
            if key not in table.deployments and router.known and not router.removed:
                router.remove()
        self._table_changed.set()
        self._table_changed = asyncio.Event()

    def router(self, app: str, deployment: str) -> DeploymentRouter:
        """The router for one deployment (created on first use)."""
        key = (app, deployment)
        router = self.routers.get(key)
        if router is None:
            router = self.routers[key] = DeploymentRouter(
                app, deployment, on_queue_change=self.queues.changed)
        return router

    async def wait_known(self, app: str, deployment: str, deadline: float | None) -> None:
        """Wait until the route table names the deployment."""
        end = deadline if deadline is not None else time.monotonic() + UNKNOWN_DEPLOYMENT_WAIT_S
        while not self.router(app, deployment).known:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise DeploymentUnavailableError(
                    f"deployment {deployment!r} of application {app!r} is not known to the "
                    "cluster (not deployed, or the controller is unreachable)"
                )
            await event_within(self._table_changed, remaining)

    async def _prepare(self, app: str, deployment: str, request: pb.CallRequest,
                       deadline: float | None) -> DeploymentRouter:
        router = self.router(app, deployment)
        if not router.known:
            await self.wait_known(app, deployment, deadline)
        request.deadline = unix_deadline(deadline)
        # Every call this process sends carries the trace it serves (one place for all).
        traceparent = tracing.outgoing()
        if traceparent and not request.traceparent:
            request.traceparent = traceparent
        if request.caller == "handle":
            replica = replica_context_or_none()
            handle_metrics().call(app, deployment, "driver" if replica is None
                                  else f"{replica.app_name}/{replica.deployment}")
        return router

    async def call(self, app: str, deployment: str, request: pb.CallRequest,
                   deadline: float | None) -> pb.CallReply:
        """Route one unary call; `deadline` is monotonic. Raises BackPressureError,
        DeploymentUnavailableError, RequestTimeoutError or ReplicaCallFailed.

        The retry rule of `_routed` without its async generators: every handle call comes
        here, and each async generator the loop tracks costs more than the loop's work."""
        router = await self._prepare(app, deployment, request, deadline)
        model_id = request_model_id(request)
        retry = False
        while True:
            slot = await router.assign(deadline, retry=retry, model_id=model_id)
            retry = True
            # Released on return, so the replica's slot is free before the caller goes on.
            with _Attempt(router, slot, model_id) as attempt:
                reply = await self.transport.call(slot.address, request, _remaining(deadline))
                if not attempt.refused(reply):
                    return reply

    def stream(self, app: str, deployment: str, request: pb.CallRequest,
               deadline: float | None,
               body: RequestBody | None = None) -> AsyncGenerator[pb.CallReply, None]:
        """Route one streaming call; yields reply messages. Retries like `call` while the
        replica has not started it (its first message refuses). `body`: an HTTP request
        body still arriving, sealed into the request when it first goes out. Close the
        iterator (`contextlib.aclosing`) if you stop before its end."""
        return self._routed(app, deployment, request, deadline, body)

    def websocket(self, app: str, deployment: str, request: pb.CallRequest,
                  ) -> contextlib.AbstractAsyncContextManager[tuple[Any, pb.WebSocketFrame]]:
        """Open a WebSocket to a replica of the deployment: `async with` it to get the gRPC
        stream and the replica's first frame (accepted, or closed before accepting); the
        replica's slot is released when the block ends."""

        @contextlib.asynccontextmanager
        async def opened() -> AsyncIterator[tuple[Any, pb.WebSocketFrame]]:
            async with contextlib.aclosing(_open_websocket(self, app, deployment,
                                                           request)) as attempts:
                async for opened_call in attempts:
                    yield opened_call
                    return
            raise ReplicaCallFailed("no replica took the websocket")

        return opened()

    async def _routed(self, app: str, deployment: str, request: pb.CallRequest,
                      deadline: float | None,
                      body: RequestBody | None = None) -> AsyncGenerator[pb.CallReply, None]:
        """The retry rule of `stream` (`call` follows it with one reply): send to a replica
        the router assigns, and while the first reply says the call never started (refused,
        draining) or the replica cannot be reached, skip that replica for a while and send
        to another. `_Attempt` holds what both share."""
        router = await self._prepare(app, deployment, request, deadline)
        model_id = request_model_id(request)
        retry = False
        while True:
            slot = await router.assign(deadline, retry=retry, model_id=model_id)
            retry = True
            with _Attempt(router, slot, model_id) as attempt:
                replies = self.transport.stream(slot.address, request, _remaining(deadline),
                                                body, on_last=attempt.ended)
                async with contextlib.aclosing(replies):
                    first = True
                    async for reply in replies:
                        if first:
                            first = False
                            if attempt.refused(reply):
                                if body is not None and body.started:
                                    raise ReplicaCallFailed(  # by protocol, never: RequestBody
                                        "replica refused a call after taking part of its body")
                                break
                            if reply.admitted:
                                continue  # the body streams to it now; the response follows
                        yield reply
                    else:
                        return


class _Attempt:
    """One try of a routed call on the replica the router assigned: a context manager that
    gives the slot back when the try ends, saying how the replica fared (the load its first
    reply reported; how long to skip it if it refused the call or could not be reached). A
    replica out of reach is swallowed (try another); a timeout becomes RequestTimeoutError."""

    __slots__ = ("model_id", "released", "reported", "router", "skip", "slot")

    def __init__(self, router: DeploymentRouter, slot: ReplicaSlot, model_id: str) -> None:
        self.router, self.slot, self.model_id = router, slot, model_id
        self.reported: int | None = None
        self.skip = 0.0
        self.released = False

    def ended(self, reply: pb.CallReply) -> None:
        """The call's last reply was just read, before the caller sees it: a call the
        replica ran to its end (it freed its own slot before sending it) frees this one
        now, so that a queued call goes out before the caller works on this reply."""
        if self.released or reply.outcome not in _RAN:
            return  # a refusal or a timeout: the caller reads it first (skip, retry, raise)
        self.released = True
        # The replica's load as it reported it: on the call's first reply (this one, for
        # a whole response in one message), else noted already.
        reported = reply.ongoing if self.reported is None else None
        self.router.release(self.slot, reported=reported, model_id=self.model_id)

    def refused(self, reply: pb.CallReply) -> bool:
        """Read the call's first reply: whether the replica refused it (it never started)."""
        self.reported = reply.ongoing
        self.skip = _refused_for(reply)
        return bool(self.skip)

    def __enter__(self) -> _Attempt:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: Any) -> bool:
        unreachable = kind is not None and issubclass(kind, ReplicaUnreachable)
        if unreachable:
            self.skip = UNREACHABLE_BACKOFF_S
        if not self.released:
            self.released = True
            self.router.release(self.slot, reported=self.reported, skip_for=self.skip,
                                model_id=self.model_id)
        if (kind is not None and issubclass(kind, TimeoutError)
                and not issubclass(kind, RequestTimeoutError)):
            raise RequestTimeoutError(str(exc)) from exc
        return unreachable


class WebSocketRefused(Exception):
    """The replica's app closed the WebSocket before accepting it; `frame` says how."""

    def __init__(self, frame: pb.WebSocketFrame) -> None:
        super().__init__(f"closed with code {frame.close_code}: {frame.close_reason}")
        self.frame = frame


async def _open_websocket(plane: DataPlane, app: str, deployment: str,
                          request: pb.CallRequest,
                          ) -> AsyncGenerator[tuple[Any, pb.WebSocketFrame], None]:
    """Route a WebSocket like a call: send the handshake to a replica the router assigns,
    and while the replica refuses it (at max_ongoing_requests, draining) or cannot be
    reached, try another. Yields once: the open stream and the replica's first frame. The
    replica's slot is held until the generator is closed."""
    router = await plane._prepare(app, deployment, request, None)
    retry = False
    while True:
        slot = await router.assign(None, retry=retry)
        retry = True
        skip = 0.0
        call = None
        try:
            try:
                call = await plane.transport.websocket(slot.address)
                await call.write(pb.WebSocketFrame(request=request))
                first = await call.read()
            except ReplicaUnreachable:
                skip = UNREACHABLE_BACKOFF_S
                continue
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    skip = UNREACHABLE_BACKOFF_S
                    continue
                raise ReplicaCallFailed(f"websocket to {slot.address} failed: "
                                        f"{exc.code().name} {exc.details()}") from exc
            if first is grpc.aio.EOF:
                raise ReplicaCallFailed("the replica ended the websocket without a reply")
            if first.outcome in _NEVER_STARTED:
                skip = REJECTED_BACKOFF_S
                continue
            yield call, first
            return
        finally:
            if call is not None:
                call.cancel()
            router.release(slot, skip_for=skip)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.001, deadline - time.monotonic())


def _refused_for(reply: pb.CallReply) -> float:
    """How long to skip the replica if it refused the call (it never started); 0 if it took
    it. A replica-side timeout is raised as RequestTimeoutError."""
    if reply.outcome in _NEVER_STARTED:
        return REJECTED_BACKOFF_S
    if reply.outcome == pb.TIMEOUT:
        raise RequestTimeoutError(reply.error or "request timed out")
    return 0.0
