"""The gRPC ingress: any method, bytes in and bytes out, routed to an app's ingress.

It never needs the user's protos: the request's serialized message goes to the replica
untouched, and the replica (which knows the protos) answers with serialized bytes. The app
is chosen by the `application` metadata key (as in Ray Serve), or is the only app with an
ingress. Shed requests get RESOURCE_EXHAUSTED at once, timeouts DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import time
import uuid

import grpc
import structlog

from weir import tracing
from weir.dataplane.caller import DataPlane
from weir.dataplane.transport import CHANNEL_OPTIONS, ReplicaCallFailed
from weir.exceptions import BackPressureError, DeploymentUnavailableError, RequestTimeoutError
from weir.metrics import proxy_metrics
from weir.protos import weir_pb2 as pb

log = structlog.get_logger("weir.proxy.grpc")


class GrpcIngress(grpc.GenericRpcHandler):
    """Routes every unary gRPC call to a replica."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method_path: str = handler_call_details.method  # type: ignore[attr-defined]

        async def handle(payload: bytes, context: grpc.aio.ServicerContext) -> bytes:
            started = time.perf_counter()
            try:
                return await self._call(method_path, payload, context)
            finally:  # weir.metrics and weir.tracing: one call per finished RPC
                code = proxy_metrics().grpc_finished(method_path, context.code(), started)
                tracing.finish(code, "OK".__ne__)

        return grpc.unary_unary_rpc_method_handler(handle)

    def _app(self, metadata: dict[str, str]) -> tuple[str, str] | None:
        table = self.plane.table
        if table is None:
            return None
        wanted = metadata.get("application")
        apps = {r.app: r.deployment for r in table.routes}
        if not wanted:
            ingresses = {(d.app) for d in table.deployments.values()}
            if len(ingresses) == 1:
                wanted = next(iter(ingresses))
        if not wanted:
            return None
        deployment = apps.get(wanted)
        if deployment is None:
            # Apps without an HTTP route still have an ingress: the first deployment listed.
            for (app, name) in table.deployments:
                if app == wanted:
                    deployment = name
                    break
        return (wanted, deployment) if deployment else None

    async def _call(self, method_path: str, payload: bytes,
                    context: grpc.aio.ServicerContext) -> bytes:
        metadata = {k: v for k, v in context.invocation_metadata() or ()
                    if isinstance(v, str)}
        target = self._app(metadata)
        if target is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                "no application matches: set the 'application' metadata key "
                                "to one of the deployed applications")
            raise AssertionError("unreachable")
        app, deployment = target
        proxy_metrics().grpc_routed(app, deployment)
        tracing.enter(metadata.get(tracing.TRACEPARENT_KEY, ""), "weir.proxy.grpc")
        options = self.plane.table.http_options if self.plane.table else {}
        deadline = None
        remaining = context.time_remaining()
        if remaining is not None:
            deadline = time.monotonic() + remaining
        if options.get("request_timeout_s"):
            limit = time.monotonic() + float(options["request_timeout_s"])
            deadline = limit if deadline is None else min(deadline, limit)
        request = pb.CallRequest(
            request_id=metadata.get("request_id") or uuid.uuid4().hex,
            method=method_path.rsplit("/", 1)[-1], caller="grpc-proxy",
            grpc=pb.GrpcRequest(method_path=method_path, payload=payload,
                                metadata=[pb.Header(name=k.encode(), value=v.encode())
                                          for k, v in metadata.items()]))
        try:
            reply = await self.plane.call(app, deployment, request, deadline)
        except BackPressureError as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except RequestTimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "request timed out")
        except DeploymentUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except ReplicaCallFailed as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        if reply.outcome == pb.USER_ERROR:
            await context.abort(grpc.StatusCode.INTERNAL, f"{reply.error_type}: {reply.error}")
        return reply.body


async def start_grpc_ingress(plane: DataPlane, host: str, port: int) -> grpc.aio.Server:
    """Serve the gRPC ingress on host:port."""
    # Public, like the HTTP ingress: no cluster token (weir.auth). It never unpickles.
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    server.add_generic_rpc_handlers((GrpcIngress(plane),))
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port} for gRPC")
    await server.start()
    log.info("gRPC ingress serving", address=f"{host}:{port}")
    return server
