"""weir.tracing: which traceparents are carried, how a request's context reaches the calls
it makes (the data plane stamps them), and the spans recorded with OpenTelemetry's SDK."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator

import pytest
import structlog

from weir import tracing
from weir.dataplane.caller import DataPlane
from weir.dataplane.route_table import LeaderLocator
from weir.protos import weir_pb2 as pb

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def test_valid_traceparents_are_kept_and_others_dropped() -> None:
    assert tracing.valid_traceparent(TRACEPARENT) == TRACEPARENT
    assert tracing.valid_traceparent(" " + TRACEPARENT.upper()) == TRACEPARENT
    # A later version may append fields; version 00 may not.
    assert tracing.valid_traceparent("01" + TRACEPARENT[2:] + "-x") == "01" + TRACEPARENT[2:] + "-x"
    for bad in ("", "garbage", TRACEPARENT + "-x", "ff" + TRACEPARENT[2:],
                f"00-{'0' * 32}-00f067aa0ba902b7-01", f"00-{TRACE}-{'0' * 16}-01",
                TRACEPARENT[:-1]):
        assert tracing.valid_traceparent(bad) == "", bad
    assert tracing.trace_id(TRACEPARENT) == TRACE


def run_in_context(fn):  # type: ignore[no-untyped-def]
    """Run `fn` in a fresh context, as each request's task is."""
    return contextvars.Context().run(fn)


def test_a_request_s_traceparent_is_bound_to_logs_and_carried_on() -> None:
    def serve() -> tuple[str, object]:
        tracing.enter(TRACEPARENT, "test")
        return tracing.outgoing(), structlog.contextvars.get_contextvars().get("traceparent")

    assert run_in_context(serve) == (TRACEPARENT, TRACEPARENT)

    def untraced_after_traced() -> tuple[str, object]:
        tracing.enter(TRACEPARENT, "test")
        tracing.enter("", "test")  # the next request on the same context
        return tracing.outgoing(), structlog.contextvars.get_contextvars().get("traceparent")

    assert run_in_context(untraced_after_traced) == ("", None)
    assert run_in_context(lambda: (tracing.enter("bad", "t"), tracing.outgoing())[1]) == ""


def test_the_data_plane_stamps_every_call_with_the_request_s_trace() -> None:
    async def main() -> tuple[str, str]:
        plane = DataPlane(LeaderLocator("", ["127.0.0.1:1"]), "test")
        plane.router("app", "dep").update(1, -1, [])  # known: no route table needed

        async def one(traceparent: str) -> str:
            tracing.enter(traceparent, "test")
            request = pb.CallRequest(request_id="r", caller="proxy")
            await plane._prepare("app", "dep", request, None)
            return request.traceparent

        traced = await asyncio.ensure_future(one(TRACEPARENT))
        untraced = await asyncio.ensure_future(one(""))
        return traced, untraced

    assert asyncio.run(main()) == (TRACEPARENT, "")


@pytest.fixture
def exporter() -> Iterator[object]:
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.use_tracer_provider(provider)
    try:
        yield memory
    finally:
        tracing.use_tracer_provider(None)


def test_spans_continue_the_received_trace_and_parent_the_calls_made(exporter) -> None:  # type: ignore[no-untyped-def]
    def serve() -> str:
        tracing.enter(TRACEPARENT, "weir.replica")
        carried = tracing.outgoing()
        tracing.finish(200, lambda status: status >= 500)
        return carried

    carried = run_in_context(serve)
    (span,) = exporter.get_finished_spans()  # type: ignore[attr-defined]
    assert span.name == "weir.replica"
    assert f"{span.context.trace_id:032x}" == TRACE
    assert f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert span.attributes["weir.status"] == "200"
    # Calls made while serving are children of this span, in the same trace.
    assert carried == f"00-{TRACE}-{span.context.span_id:016x}-01"


def test_a_request_without_traceparent_starts_a_trace_and_errors_are_marked(exporter) -> None:  # type: ignore[no-untyped-def]
    from opentelemetry.trace import StatusCode

    def serve() -> str:
        tracing.enter("", "weir.proxy")
        carried = tracing.outgoing()
        tracing.finish(503, lambda status: status >= 500)
        tracing.finish(503, lambda status: status >= 500)  # ended once
        return carried

    carried = run_in_context(serve)
    (span,) = exporter.get_finished_spans()  # type: ignore[attr-defined]
    assert span.parent is None and span.status.status_code == StatusCode.ERROR
    assert tracing.trace_id(carried) == f"{span.context.trace_id:032x}"


def test_spans_are_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in tracing.ENDPOINT_ENV:
        monkeypatch.delenv(name, raising=False)
    assert tracing.configure("test") is False
    assert tracing._tracer is None


def test_nothing_of_opentelemetry_is_imported_without_spans() -> None:
    import subprocess
    import sys

    # Not the replica's modules: they import FastAPI, whose recent versions import
    # opentelemetry's API themselves.
    code = ("import sys, weir.tracing as t, weir.proxy.http_app, weir.dataplane.caller\n"
            f"t.enter({TRACEPARENT!r}, 'x'); t.outgoing(); t.finish(200, bool)\n"
            "print([m for m in sys.modules if m.startswith('opentelemetry')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"
