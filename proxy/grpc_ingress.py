"""The gRPC ingress: any method of any kind, bytes in and bytes out, routed to an app.

It never needs the user's protos: request messages go to the replica untouched, and the
replica (which knows the protos) answers with serialized bytes. Every method is served as
bidirectional, which on the wire fits all four kinds; what the replica's catalog says of a
method (weir.proxy.grpc_catalog) only picks the path:

- unary: the message goes in the call, on the multiplexed channel (the fast path);
- server streaming: the message goes in the call, on a call of its own;
- client streaming, bidirectional, or a method not known yet: a call of its own, with the
  client's messages following it one by one, read from the client only as the replica
  takes them, so gRPC's flow control holds end to end and nothing is read from a call
  that is shed.

Each response message is written to the client as it arrives. The call ends with the
status the replica reports (the code the user set on `grpc_context`, UNKNOWN with the
message for an exception) and its trailing metadata plus `x-request-id`: the client's own
if it sent one (the HTTP ingress's rule), else a new one; the replica's request context
carries the same id. Shed calls get RESOURCE_EXHAUSTED (before any work is done for them
when the proxy's admission, `weir.proxy.admission`, sheds them; else from the data plane),
timeouts DEADLINE_EXCEEDED, an app with no replica UNAVAILABLE; a client that goes away
cancels the replica's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any, NoReturn

import grpc
import structlog

from weir import tracing
from weir.dataplane.caller import DataPlane
from weir.dataplane.request_body import RequestBody
from weir.dataplane.request_id import new_request_id
from weir.dataplane.transport import CHANNEL_OPTIONS, ReplicaCallFailed
from weir.exceptions import BackPressureError, DeploymentUnavailableError, RequestTimeoutError
from weir.grpc_health import serve_health
from weir.grpc_metadata import MetadataValue, metadata_headers, metadata_pairs
from weir.metrics import proxy_metrics
from weir.protos import weir_pb2 as pb
from weir.proxy.admission import Admission
from weir.proxy.grpc_catalog import APPLICATION_KEY, method_kind, route_call
from weir.proxy.grpc_reflection import CatalogReflection, add_reflection
from weir.proxy.grpc_services import ServiceFollower
from weir.proxy.http_app import REQUEST_ID_HEADER

log = structlog.get_logger("weir.proxy.grpc")

#: The request id's metadata key (the HTTP ingress's X-Request-ID header, lower-cased as
#: gRPC metadata keys are); Ray's own `request_id` key is read and answered too.
REQUEST_ID_KEY = REQUEST_ID_HEADER.decode()
RAY_REQUEST_ID_KEY = "request_id"
_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

Metadata = list[tuple[str, MetadataValue]]


def call_status(reply: pb.CallReply) -> tuple[grpc.StatusCode, str, Metadata]:
    """The status, details and trailing metadata a call ends with, from the replica's last
    reply: the code the user set, else one for the reply's outcome."""
    if reply.grpc_code:
        code = _STATUS_BY_NUMBER.get(reply.grpc_code, grpc.StatusCode.UNKNOWN)
    elif reply.outcome == pb.USER_ERROR:
        code = grpc.StatusCode.UNKNOWN
    elif reply.outcome == pb.TIMEOUT:
        code = grpc.StatusCode.DEADLINE_EXCEEDED
    elif reply.outcome in (pb.REJECTED, pb.UNAVAILABLE):
        code = grpc.StatusCode.UNAVAILABLE
    else:
        code = grpc.StatusCode.OK
    details = reply.grpc_details
    if not details and reply.error:
        details = f"{reply.error_type}: {reply.error}" if reply.error_type else reply.error
    return code, details, metadata_pairs(reply.grpc_trailing_metadata)


def request_id_of(metadata: Metadata) -> str:
    """The client's request id (x-request-id, or Ray's request_id), else a new one."""
    given = {key: value for key, value in metadata if isinstance(value, str)}
    return given.get(REQUEST_ID_KEY) or given.get(RAY_REQUEST_ID_KEY) or new_request_id()


class ClientMessages(RequestBody):
    """The client's request messages of a streamed call, as the "body" that follows the
    call to the replica (the transport's `seal`/`rest` contract): none is read from the
    client before the replica admitted the call, then each as the replica takes it."""

    def __init__(self, grpc_request: pb.GrpcRequest,
                 messages: AsyncIterator[bytes] | None) -> None:
        super().__init__(pb.HttpRequest(), b"")
        self._grpc_request = grpc_request
        self._messages = messages

    def seal(self) -> bool:
        """Mark the call's messages as following it; always a call of its own, so that
        flow control paces its response too."""
        self._grpc_request.more_messages = self._messages is not None
        return True

    async def rest(self) -> AsyncIterator[tuple[bytes, bool]]:
        """The client's messages, each read when the replica's side can take it."""
        self.started = True
        if self._messages is None:
            return
        async for message in self._messages:
            yield message, False


class GrpcIngress(grpc.GenericRpcHandler):
    """Routes every gRPC call not served by the proxy itself to a replica."""

    def __init__(self, plane: DataPlane, services: ServiceFollower,
                 admission: Admission | None = None) -> None:
        self.plane = plane
        self.services = services
        self.admission = admission

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        """The handler for any method: unary if the catalog knows it is, else bidi."""
        method_path: str = handler_call_details.method  # type: ignore[attr-defined]
        if self._known_unary(method_path, handler_call_details):
            # gRPC's unary handler costs less per call than reading a stream of one.
            async def unary(payload: bytes, context: grpc.aio.ServicerContext) -> bytes | None:
                return await self._call(method_path, payload, context)

            return grpc.unary_unary_rpc_method_handler(unary)

        async def handle(messages: AsyncIterator[bytes],
                         context: grpc.aio.ServicerContext) -> None:
            await self._call(method_path, messages, context)

        return grpc.stream_stream_rpc_method_handler(handle)

    def _known_unary(self, method_path: str, details: grpc.HandlerCallDetails) -> bool:
        table = self.plane.table
        if table is None:
            return False
        metadata = details.invocation_metadata or ()  # type: ignore[attr-defined]
        target = route_call(table, self.services.catalog, method_path, _application(metadata))
        kind = None if target is None else method_kind(self.services.catalog, target[0],
                                                       method_path)
        return kind is not None and kind.unary

    async def _route(self, method_path: str, application: str | None) -> tuple[str, str] | None:
        table = self.plane.table
        if table is None:
            return None
        target = route_call(table, self.services.catalog, method_path, application)
        if target is None and not application:
            await self.services.refresh()  # an app deployed since: learn its services now
            target = route_call(table, self.services.catalog, method_path, application)
        return target

    async def _call(self, method_path: str, messages: AsyncIterator[bytes] | bytes,
                    context: grpc.aio.ServicerContext) -> bytes | None:
        """Serve one call, counted and traced once it ends (weir.metrics, weir.tracing)."""
        started = time.perf_counter()
        try:
            return await self._serve(method_path, messages, context)
        finally:
            code = proxy_metrics().grpc_finished(method_path, context.code(), started)
            tracing.finish(code, "OK".__ne__)

    async def _serve(self, method_path: str, messages: AsyncIterator[bytes] | bytes,
                     context: grpc.aio.ServicerContext) -> bytes | None:
        """Serve one call: `messages` is the request of a call known to be unary (whose
        response is returned), else the stream of the client's messages."""
        metadata: Metadata = list(context.invocation_metadata() or ())
        request_id = request_id_of(metadata)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        trailing: Metadata = [(REQUEST_ID_KEY, request_id), (RAY_REQUEST_ID_KEY, request_id)]
        application = _application(metadata)
        target = await self._route(method_path, application)
        if target is None and application:
            await _abort(context, grpc.StatusCode.NOT_FOUND,
                         f"no application {application!r}: set the 'application' metadata "
                         "key to one of the deployed applications", trailing)
        if target is None:
            # gRPC's answer for a service nobody serves (tools such as grpcurl rely on it).
            await _abort(context, grpc.StatusCode.UNIMPLEMENTED,
                         f"no application serves {method_path}: deploy one whose deployment "
                         "has its methods and whose servicer function is in grpc_options."
                         "grpc_servicer_functions, or set the 'application' metadata key",
                         trailing)
        app, deployment = target
        proxy_metrics().grpc_routed(app, deployment)
        admission = self.admission
        if admission is None:
            return await self._forward(target, method_path, messages, context, metadata,
                                       request_id, trailing)
        # Refused before anything is built for the call (counted as shed by its code).
        refusal = admission.refusal(target)
        if refusal:
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, refusal, trailing)
        admission.enter(target)
        try:
            return await self._forward(target, method_path, messages, context, metadata,
                                       request_id, trailing)
        finally:
            admission.leave(target)

    async def _forward(self, target: tuple[str, str], method_path: str,
                       messages: AsyncIterator[bytes] | bytes,
                       context: grpc.aio.ServicerContext, metadata: Metadata,
                       request_id: str, trailing: Metadata) -> bytes | None:
        """Call deployment `target` with the call's messages and relay its answer."""
        app, deployment = target
        tracing.enter(_metadata_value(metadata, tracing.TRACEPARENT_KEY) or "", "weir.proxy.grpc")
        request = pb.CallRequest(
            request_id=request_id, method=method_path.rsplit("/", 1)[-1], caller="grpc-proxy",
            grpc=pb.GrpcRequest(method_path=method_path, peer=context.peer(),
                                metadata=metadata_headers(metadata)))
        deadline = self._deadline(context)
        kind = method_kind(self.services.catalog, app, method_path)
        try:
            if isinstance(messages, bytes):
                request.grpc.payload = messages
            elif kind is not None and not kind.client_streaming:
                first = await anext(aiter(messages), None)
                if first is None:
                    await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                                 f"{method_path} takes one request message; none came",
                                 trailing)
                request.grpc.payload = first
            if isinstance(messages, bytes) or (kind is not None and kind.unary):
                reply = await self.plane.call(app, deployment, request, deadline)
                await _finish(context, reply, trailing)
                if isinstance(messages, bytes):
                    return reply.body
                await context.write(reply.body)
                return None
            assert not isinstance(messages, bytes)
            body = ClientMessages(request.grpc, None if kind is not None
                                  and not kind.client_streaming else aiter(messages))
            last = pb.CallReply(outcome=pb.UNAVAILABLE, error="the replica ended the call "
                                "without a status")
            async with contextlib.aclosing(self.plane.stream(app, deployment, request,
                                                             deadline, body)) as replies:
                async for reply in replies:
                    if not reply.more_body:
                        last = reply
                        break
                    await context.write(reply.body)
            await _finish(context, last, trailing)
            return None
        except BackPressureError as exc:
            log.warning("request shed", app=app, reason=str(exc))
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), trailing)
        except RequestTimeoutError:
            await _abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "request timed out",
                         trailing)
        except (DeploymentUnavailableError, ReplicaCallFailed) as exc:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc), trailing)

    def _deadline(self, context: grpc.aio.ServicerContext) -> float | None:
        """The call's monotonic deadline: the client's, capped by request_timeout_s."""
        options = self.plane.table.http_options if self.plane.table else {}
        deadline = None
        remaining = context.time_remaining()
        if remaining is not None:
            deadline = time.monotonic() + remaining
        if options.get("request_timeout_s"):
            limit = time.monotonic() + float(options["request_timeout_s"])
            deadline = limit if deadline is None else min(deadline, limit)
        return deadline


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str,
                 trailing: Metadata) -> NoReturn:
    await context.abort(code, details, tuple(trailing))
    raise AssertionError("unreachable: abort raises")


def _metadata_value(metadata: Iterable[tuple[str, MetadataValue]], key: str) -> str | None:
    """The text value of `key` in the call's metadata, if any."""
    return next((v for k, v in metadata if k == key and isinstance(v, str)), None)


def _application(metadata: Iterable[tuple[str, MetadataValue]]) -> str | None:
    """The app the client named (Ray's `application` metadata key), if any."""
    return _metadata_value(metadata, APPLICATION_KEY)


async def _finish(context: grpc.aio.ServicerContext, reply: pb.CallReply,
                  trailing: Metadata) -> None:
    """Set the call's end as the replica's last reply says; abort unless it is OK."""
    code, details, user_trailing = call_status(reply)
    metadata = [*user_trailing, *trailing]
    if code != grpc.StatusCode.OK:
        await _abort(context, code, details, metadata)
    context.set_trailing_metadata(tuple(metadata))
    if details:
        context.set_details(details)


async def start_grpc_ingress(plane: DataPlane, host: str, port: int,
                             admission: Admission | None = None) -> grpc.aio.Server:
    """Serve the gRPC ingress on host:port, with the standard health and reflection
    services beside the users' services; calls pass `admission` first (None: the data
    plane's own shedding only)."""
    # Public, like the HTTP ingress: no cluster token (weir.auth). It never unpickles.
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    health = await serve_health(server)
    reflection = CatalogReflection()
    add_reflection(reflection, server)
    services = ServiceFollower(plane, health, reflection)
    server.add_generic_rpc_handlers((GrpcIngress(plane, services, admission),))
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port} for gRPC")
    await server.start()
    follower = asyncio.get_running_loop().create_task(services.run())

    async def stop_following() -> None:
        await server.wait_for_termination()
        follower.cancel()

    _background.add(asyncio.get_running_loop().create_task(stop_following()))
    log.info("gRPC ingress serving", address=f"{host}:{port}")
    return server


#: Tasks that live as long as an ingress server (held, so they are not collected).
_background: set[asyncio.Task[Any]] = set()
