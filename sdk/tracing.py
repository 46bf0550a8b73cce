"""Trace context: a W3C `traceparent` carried from the ingress through every hop.

The proxy takes the `traceparent` a client sent (HTTP header or gRPC metadata) and the
request's task enters it (`enter`); the data plane stamps every call it sends with
`outgoing()` (`weir.dataplane.caller`), the replica enters what it receives, and a handle
call made while serving goes out stamped the same way: one trace across deployments. Each
process binds the traceparent it received to its log lines (structlog contextvars), so
that logs of one request meet across processes, as the request id's do.

Spans. With the `otel` extra installed and an OTLP endpoint configured the way the
OpenTelemetry SDK reads it (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), the proxy and each replica also record one span per
request, a child of the one received, and calls carry the span's own context onward.
Without them nothing of OpenTelemetry is imported, and a request without a traceparent
costs one context variable read.

The context lives in context variables: each call is served in its own task (and sync user
code in a thread given a copy of that task's context), so requests never see each other's.
"""

from __future__ import annotations

import contextvars
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

#: The W3C Trace Context header (and gRPC metadata key).
TRACEPARENT_HEADER = b"traceparent"
TRACEPARENT_KEY = "traceparent"
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
T = TypeVar("T")
ENDPOINT_ENV = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

#: The traceparent the current request came with ("" if none).
_received: contextvars.ContextVar[str] = contextvars.ContextVar("weir_traceparent", default="")
#: The current request's span, when spans are recorded.
_span: contextvars.ContextVar[Any] = contextvars.ContextVar("weir_span", default=None)
#: The OpenTelemetry tracer, once configured (None: no spans).
_tracer: Any = None


def valid_traceparent(value: str) -> str:
    """`value` if it is a W3C traceparent Weir can carry (version 00-fe, non-zero ids), else
    "" (an invalid one is dropped, as the spec says, rather than passed on). Pure."""
    value = value.strip().lower()
    if (len(value) < 55 or not _TRACEPARENT.match(value) or value.startswith("ff")
            or value[3:35] == _ZERO_TRACE or value[36:52] == _ZERO_SPAN):
        return ""
    if value.startswith("00") and len(value) != 55:
        return ""
    return value


def trace_id(traceparent: str) -> str:
    """The trace id of a valid traceparent. Pure."""
    return traceparent[3:35]


def enter(traceparent: str, name: str, attributes: dict[str, str] | None = None) -> None:
    """Make `traceparent` (as received; "" for none) the current request's trace context:
    bind it to log lines and, when spans are recorded, start the request's span under it."""
    if traceparent:
        traceparent = valid_traceparent(traceparent)
        if traceparent:
            _received.set(traceparent)
            structlog.contextvars.bind_contextvars(traceparent=traceparent)
    elif _received.get():
        # A context that served a traced request before (a connection's task, say).
        _received.set("")
        structlog.contextvars.unbind_contextvars("traceparent")
    if _tracer is not None:
        _start_span(traceparent, name, attributes)


def outgoing() -> str:
    """The traceparent a call made now carries: the current span's, else the one received
    ("" outside a traced request)."""
    span = _span.get()
    if span is not None:
        context = span.get_span_context()
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    return _received.get()


def finish(status: T, failed: Callable[[T], bool]) -> None:
    """End the current request's span, if any, with its status (an HTTP code, a gRPC code
    name, or a replica outcome), an error if `failed(status)`. Without a span it costs a
    context variable read: nothing is computed from `status`."""
    span = _span.get()
    if span is None:
        return
    _span.set(None)
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("weir.status", str(status))
    if failed(status):
        span.set_status(Status(StatusCode.ERROR, str(status)))
    span.end()


def _start_span(traceparent: str, name: str, attributes: dict[str, str] | None) -> None:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from weir.runtime_context import replica_context_or_none

    parent = (TraceContextTextMapPropagator().extract({TRACEPARENT_KEY: traceparent})
              if traceparent else None)
    replica = replica_context_or_none()
    if replica is not None:
        attributes = {**(attributes or {}), "weir.application": replica.app_name,
                      "weir.deployment": replica.deployment, "weir.replica": replica.replica_id}
    span = _tracer.start_span(name, context=parent, kind=trace.SpanKind.SERVER,
                              attributes=attributes)
    _span.set(span)
    # User code's own spans become children of the request's. The task (or the thread's
    # context copy) ends with the request, so the context is never detached.
    otel_context.attach(trace.set_span_in_context(span))


def configure(service_name: str) -> bool:
    """Record spans and export them over OTLP if an endpoint is configured and the `otel`
    extra is installed; returns whether spans are on. A process calls this once at start."""
    if not any(os.environ.get(name) for name in ENDPOINT_ENV):
        return False
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        structlog.get_logger("weir.tracing").warning(
            "an OTLP endpoint is set but spans are off: install weir[otel] to export them")
        return False
    provider = TracerProvider(resource=Resource.create({
        "service.name": os.environ.get("OTEL_SERVICE_NAME") or f"weir-{service_name}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    use_tracer_provider(provider)
    return True


def use_tracer_provider(provider: Any) -> None:
    """Record spans with `provider` (an OpenTelemetry TracerProvider; None: stop)."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("weir")
