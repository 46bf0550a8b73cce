"""The replica's data-plane server: admits calls up to max_ongoing_requests and runs them.

A call beyond max_ongoing_requests, or one that arrives while the replica is not RUNNING
(starting, draining), is answered at once with REJECTED / UNAVAILABLE: it never started,
so the caller's router tries another replica. Every reply carries the replica's load.

An HTTP call whose body is still arriving (CallBodyStream) is admitted the same way; only
once admitted does the replica say so (`admitted`) and the caller send the rest, which a
reader task passes on to the request's ASGI `receive` as it comes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import structlog
from grpc_health.v1.health import aio as health_aio

from weir import auth, grpc_health, tracing
from weir.config.deployment_options import DEFAULT_DEPLOYMENT_OPTIONS
from weir.dataplane import payload
from weir.dataplane.frame_socket import FrameSocketServer, channel_socket_enabled
from weir.dataplane.transport import CHANNEL_OPTIONS, FrameOutbox
from weir.metrics import failed, replica_metrics, replica_metrics_port, serve_metrics
from weir.multiplex import request_model_id
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc
from weir.replica import grpc_calls, websocket_relay
from weir.replica.grpc_codecs import MethodCodec, method_codecs, service_catalog
from weir.replica.http_call import Emit, emitted_replies, serve_http
from weir.replica.user_callable import CallTimedOut, UserCallable, error_fields, within
from weir.runtime import bound_logger
from weir.runtime_context import RequestContext, replica_context_or_none, serving

log = structlog.get_logger("weir.replica")


def serve_request(request: pb.CallRequest) -> None:
    """Make `request` the one the current task serves: user code reads it as Ray's request
    context, handle calls carry its id on, and every log line names it. Each call runs in
    a task of its own, so this touches no other call."""
    is_http = request.HasField("http")
    replica = replica_context_or_none()
    serving(RequestContext(
        request_id=request.request_id, is_http_request=is_http,
        route=(request.http.root_path or "/") if is_http else "",
        app_name=replica.app_name if replica is not None else "",
        multiplexed_model_id=request_model_id(request)))
    structlog.contextvars.bind_contextvars(request_id=request.request_id)
    tracing.enter(request.traceparent, "weir.replica")


def _identity() -> tuple[str, str, str]:
    """The replica's (application, deployment, replica id) for its metrics' labels."""
    replica = replica_context_or_none()
    if replica is None:
        return "", "", ""
    return replica.app_name, replica.deployment, replica.replica_id


def _outcome(reply: pb.CallReply, before: str) -> str:
    """The status an access line gives a streamed call, updated by one of its replies: the
    HTTP status once one is sent, else the outcome of a reply that is not OK."""
    if reply.status:
        return str(reply.status)
    if reply.outcome != pb.OK:
        return pb.CallOutcome.Name(reply.outcome)
    return before


#: How early a cancel may come before the request's deadline and still be its timeout
#: (the caller's clock and timer against the replica's).
DEADLINE_SLACK_S = 0.1


def cancelled_outcome(deadline: float, now: float) -> str:
    """What a call its caller cancelled before any answer counts as: TIMEOUT (a failure)
    if its deadline had passed, else CANCELLED (the caller went away). Pure."""
    return "TIMEOUT" if deadline and now >= deadline - DEADLINE_SLACK_S else "CANCELLED"


class _Served:
    """The bookkeeping of one admitted streamed call, for a `with` block around it: the
    outcome its replies tell (`track`), then its access line and metrics and its slot
    given back when the block ends, before the call's last frame goes out."""

    __slots__ = ("outcome", "request", "server", "started")

    def __init__(self, server: ReplicaServer, request: pb.CallRequest) -> None:
        self.server, self.request = server, request
        self.started, self.outcome = time.perf_counter(), "OK"

    def track(self, reply: pb.CallReply) -> None:
        """Read one reply of the call on its way out."""
        self.outcome = _outcome(reply, self.outcome)

    def __enter__(self) -> _Served:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if (exc_type is not None and issubclass(exc_type, asyncio.CancelledError)
                and self.outcome == "OK"):
            # Cancelled by its caller before it answered: the caller's deadline passed (the
            # proxy's request_timeout_s cancels at the same moment the replica's own timer
            # would, and its cancel frame usually comes first), or the caller went away.
            self.outcome = cancelled_outcome(self.request.deadline, time.time())
        self.server._access(self.request, self.outcome, self.started)
        self.server._done()


class ReplicaServer(pb_grpc.ReplicaServicer):
    """Serves `weir.Replica` for one UserCallable."""

    def __init__(self, on_load_change: Callable[[], None]) -> None:
        self.state: pb.ReplicaState = pb.STARTING
        self.user: UserCallable | None = None
        self.max_ongoing = int(DEFAULT_DEPLOYMENT_OPTIONS["max_ongoing_requests"])
        self.admitted = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self._on_load_change = on_load_change
        #: The config's grpc_options.grpc_servicer_functions, for gRPC ingress calls.
        self.grpc_servicer_functions: list[str] = []
        self.grpc_codecs: dict[str, MethodCodec] | None = None
        #: The deployment's logging_config.enable_access_log: one line per call served.
        self.access_log = False
        #: The standard gRPC health service on this replica's server, once it started.
        self.health: health_aio.HealthServicer | None = None
        self.metrics = replica_metrics()
        #: host:port of this process's Prometheus metrics ("" if none).
        self.metrics_address = ""
        #: Channel without gRPC (`weir.dataplane.frame_socket`), once the server started.
        self.channel_socket: FrameSocketServer | None = None

    @property
    def ongoing(self) -> int:
        """Requests in progress, counting sync work abandoned after a timeout."""
        busy = self.user.busy_threads if self.user is not None else 0
        return max(self.admitted, busy)

    def _admit(self) -> pb.CallReply | None:
        if self.state != pb.RUNNING or self.user is None:
            self.metrics.refused()
            return pb.CallReply(outcome=pb.UNAVAILABLE, ongoing=self.ongoing,
                                error=f"replica is {pb.ReplicaState.Name(self.state).lower()}")
        if self.ongoing >= self.max_ongoing:
            self.metrics.refused()
            return pb.CallReply(outcome=pb.REJECTED, ongoing=self.ongoing,
                                error="replica at max_ongoing_requests")
        self.admitted += 1
        self.idle.clear()
        self._on_load_change()
        return None

    def _access(self, request: pb.CallRequest, outcome: str, started: float) -> None:
        """A call served: its metrics, its span, and an access line (Ray's replica access
        log) if enabled."""
        seconds = time.perf_counter() - started
        is_http = request.HasField("http")
        self.metrics.served((request.http.root_path or "/") if is_http else "", outcome, seconds)
        tracing.finish(outcome, failed)
        if not self.access_log:
            return
        duration_ms = round(seconds * 1000, 2)
        access = bound_logger("weir.replica.access")
        if is_http:
            access.info("access", route=request.http.path, http_method=request.http.method,
                        status=outcome, duration_ms=duration_ms)
        else:
            access.info("access", method=request.method or "__call__", status=outcome,
                        duration_ms=duration_ms)

    def _done(self) -> None:
        self.admitted -= 1
        if self.admitted == 0:
            self.idle.set()
        self._on_load_change()

    @staticmethod
    def _timeout(request: pb.CallRequest) -> float | None:
        return None if not request.deadline else request.deadline - time.time()

    async def Call(self, request: pb.CallRequest, context: Any) -> pb.CallReply:
        """A unary call from a handle."""
        refused = self._admit()
        if refused is not None:
            return refused
        assert self.user is not None
        serve_request(request)
        started, outcome = time.perf_counter(), "ERROR"
        try:
            timeout = self._timeout(request)
            if timeout is not None and timeout <= 0:
                return pb.CallReply(outcome=pb.TIMEOUT, error="deadline passed before start")
            if request.HasField("grpc"):
                reply = await within(timeout, grpc_calls.unary_reply(
                    self.user, self._grpc_codecs(), request, lambda: self.ongoing))
                outcome = pb.CallOutcome.Name(reply.outcome)
                return reply
            result = await within(timeout, self.user.call_python(request.method,
                                                                 request.pickled_args))
            try:
                pickled = payload.dumps(result)
            except Exception as exc:
                raise TypeError(f"return value of type {type(result).__name__} cannot be "
                                f"serialized: {exc}") from exc
            outcome = "OK"
            return pb.CallReply(outcome=pb.OK, pickled=pickled, ongoing=self.ongoing - 1)
        except CallTimedOut:
            outcome = "TIMEOUT"
            log.warning("request timed out; cancelled", method=request.method or "__call__")
            return pb.CallReply(outcome=pb.TIMEOUT, error="request timed out on the replica",
                                ongoing=self.ongoing - 1)
        except Exception as exc:
            log.error("user code raised", method=request.method or "__call__", exc_info=True)
            return pb.CallReply(outcome=pb.USER_ERROR, ongoing=self.ongoing - 1,
                                **error_fields(exc, with_cause=True))
        finally:
            self._access(request, outcome, started)
            self._done()

    def _grpc_codecs(self) -> dict[str, MethodCodec]:
        if self.grpc_codecs is None:
            self.grpc_codecs = method_codecs(self.grpc_servicer_functions)
        return self.grpc_codecs

    async def GrpcServices(self, request: pb.GrpcServicesRequest,
                           context: Any) -> pb.GrpcServicesReply:
        """The user's gRPC services, for the ingress's routing, health and reflection."""
        def implements(method: str) -> bool:
            try:
                return self.user is not None and callable(self.user.method(method))
            except AttributeError:
                return False

        return service_catalog(self._grpc_codecs(), implements)

    async def CallStream(self, request: pb.CallRequest,
                         context: Any) -> AsyncIterator[pb.CallReply]:
        """An HTTP call from the proxy, or a streaming handle call."""
        refused = self._admit()
        if refused is not None:
            yield refused
            return
        serve_request(request)
        with _Served(self, request) as served:
            replies = (emitted_replies(lambda emit: self._http(request, emit))
                       if request.HasField("http") else self._python_stream(request))
            async for reply in replies:
                served.track(reply)
                yield reply

    async def CallBodyStream(self, parts: AsyncIterator[pb.CallPart],
                             context: Any) -> AsyncIterator[pb.CallReply]:
        """An HTTP call from the proxy whose body follows the request in chunks."""
        first = await anext(aiter(parts), None)
        if first is None or not first.HasField("request"):
            return
        request = first.request
        refused = self._admit()
        if refused is not None:
            yield refused
            return
        serve_request(request)
        if request.HasField("grpc"):
            async for reply in self._grpc_stream(request, parts):
                yield reply
            return
        rest: asyncio.Queue[pb.BodyChunk | None] = asyncio.Queue()

        async def read_body() -> None:
            ended = False
            try:
                async for part in parts:
                    rest.put_nowait(part.body)
                    if part.body.last:
                        ended = True
                        return
            finally:
                if not ended:
                    rest.put_nowait(None)  # the caller went away before the body ended

        reader = asyncio.get_running_loop().create_task(read_body())
        try:
            with _Served(self, request) as served:
                yield pb.CallReply(outcome=pb.OK, admitted=True, ongoing=self.ongoing,
                                   more_body=True)
                async for reply in emitted_replies(
                        lambda emit: self._http(request, emit, rest)):
                    served.track(reply)
                    yield reply
        finally:
            reader.cancel()

    async def _grpc_stream(self, request: pb.CallRequest,
                           parts: AsyncIterator[pb.CallPart]) -> AsyncIterator[pb.CallReply]:
        """A streamed call from the gRPC ingress (admitted): its messages follow on `parts`."""
        assert self.user is not None
        started, outcome = time.perf_counter(), "OK"
        try:
            yield pb.CallReply(outcome=pb.OK, admitted=True, ongoing=self.ongoing,
                               more_body=True)
            async for reply in grpc_calls.streamed_replies(
                    self.user, self._grpc_codecs(), request, parts, lambda: self.ongoing):
                outcome = _outcome(reply, outcome)
                yield reply
        finally:
            self._access(request, outcome, started)
            self._done()

    async def WebSocket(self, frames: AsyncIterator[pb.WebSocketFrame],
                        context: Any) -> AsyncIterator[pb.WebSocketFrame]:
        """A WebSocket from the proxy, through the ingress app; it counts as one ongoing
        request for as long as it is open."""
        incoming = aiter(frames)
        first = await anext(incoming, None)
        if first is None or not first.HasField("request"):
            return
        refused = self._admit()
        if refused is not None:
            yield pb.WebSocketFrame(outcome=refused.outcome, error=refused.error)
            return
        assert self.user is not None
        serve_request(first.request)
        try:
            async for frame in websocket_relay.relay(self.user, first.request, incoming):
                yield frame
        finally:
            self._done()

    async def ChannelSocket(self, request: pb.ChannelSocketRequest,
                            context: Any) -> pb.ChannelSocketReply:
        """The port of this replica's frame socket (0: none)."""
        return pb.ChannelSocketReply(
            port=self.channel_socket.port if self.channel_socket is not None else 0)

    async def CheckHealth(self, request: pb.HealthCheckRequest,
                          context: Any) -> pb.HealthCheckReply:
        """Run the user's check_health() (`check_health`). The caller's deadline bounds the
        check; when it passes, gRPC cancels this call. The replica checks itself for the
        leader (`weir.replica.session`); this rpc stays for other callers."""
        return await self.check_health()

    async def check_health(self) -> pb.HealthCheckReply:
        """Run the user's check_health(). Only a RUNNING replica is checked: one still
        starting is judged by its registration deadline, one stopping is on its way out."""
        if self.state != pb.RUNNING or self.user is None:
            return pb.HealthCheckReply(healthy=True)
        try:
            await self.user.check_health()
        except Exception as exc:
            return pb.HealthCheckReply(healthy=False, message=f"{type(exc).__name__}: {exc}")
        return pb.HealthCheckReply(healthy=True)

    async def Channel(self, frames: AsyncIterator[pb.Frame],
                      context: Any) -> AsyncIterator[pb.Frame]:
        """Many calls of one caller on one bidi stream, told apart by call_id; each runs as
        its own task exactly as Call / CallStream would, and a cancel frame cancels it.
        Frames travel in batches both ways (`FrameOutbox`)."""
        outbox = FrameOutbox()
        tasks: dict[int, asyncio.Task[None]] = {}

        async def run(frame: pb.Frame) -> None:
            call_id = frame.call_id
            try:
                if not frame.stream:
                    outbox.add(call_id, reply=await self.Call(frame.request, context),
                               last=True)
                    return
                request = frame.request
                refused = self._admit()
                if refused is not None:
                    outbox.add(call_id, reply=refused, last=True)
                    return
                serve_request(request)
                # A reply that may be the last is held until the call ends, so that a whole
                # response is one frame; one that says more follows goes at once, so
                # streamed chunks are never a chunk late.
                held: pb.CallReply | None = None

                def emit(reply: pb.CallReply) -> None:
                    nonlocal held
                    served.track(reply)
                    if held is not None:
                        outbox.add(call_id, reply=held)
                        held = None
                    if reply.more_body:
                        outbox.add(call_id, reply=reply)
                    else:
                        held = reply

                # An HTTP call runs right here, on this task: a cancel frame cancels the
                # user's code with no task or generator between.
                with _Served(self, request) as served:
                    if request.HasField("http"):
                        await self._http(request, emit)
                    else:
                        async for reply in self._python_stream(request):
                            emit(reply)
                outbox.add(call_id, reply=held, last=True)
            finally:
                tasks.pop(call_id, None)

        async def read() -> None:
            loop = asyncio.get_running_loop()
            try:
                async for message in frames:
                    for frame in message.batch:
                        if frame.cancel:
                            task = tasks.get(frame.call_id)
                            if task is not None:
                                task.cancel()
                        else:
                            tasks[frame.call_id] = loop.create_task(run(frame))
            finally:
                outbox.close()

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while (message := await outbox.take()) is not None:
                yield message
        finally:
            reader.cancel()
            for task in list(tasks.values()):
                task.cancel()

    async def _python_stream(self, request: pb.CallRequest) -> AsyncIterator[pb.CallReply]:
        assert self.user is not None
        yield pb.CallReply(outcome=pb.OK, ongoing=self.ongoing, more_body=True)
        try:
            async for item in self.user.stream_python(request.method, request.pickled_args):
                yield pb.CallReply(outcome=pb.OK, pickled=payload.dumps(item),
                                   more_body=True)
        except Exception as exc:
            log.error("user stream raised", request_id=request.request_id, exc_info=True)
            yield pb.CallReply(outcome=pb.USER_ERROR, **error_fields(exc, with_cause=True))

    async def _http(self, request: pb.CallRequest, emit: Emit,
                    rest: asyncio.Queue[pb.BodyChunk | None] | None = None) -> None:
        assert self.user is not None
        await serve_http(self.user, request, emit, lambda: self.ongoing,
                         self._timeout(request), rest)


async def start_server(servicer: ReplicaServer, host: str) -> tuple[grpc.aio.Server, str]:
    """Start the gRPC server on a free port; returns it and its address."""
    # Handles send pickles: only callers with the cluster token get past the server.
    server = auth.server(options=CHANNEL_OPTIONS)
    pb_grpc.add_ReplicaServicer_to_server(servicer, server)
    servicer.health = await grpc_health.serve_health(server, ["weir.Replica"])
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    if channel_socket_enabled():
        servicer.channel_socket = FrameSocketServer(
            lambda frames: servicer.Channel(frames, None))
        await servicer.channel_socket.start(host)
    servicer.metrics.identify_by(_identity)
    servicer.metrics.follow_load(lambda: servicer.ongoing)
    metrics_port = replica_metrics_port()
    if metrics_port >= 0:
        servicer.metrics_address = serve_metrics(host, metrics_port)
    tracing.configure("replica")
    return server, f"{host}:{port}"
