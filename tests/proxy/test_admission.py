"""Admission before the ASGI app: the pure decision, the shed answer's bytes, the loop lag
monitor on a real loop, and `Admission` over a real route table and router."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from weir.dataplane.route_table import RouteEntry, RouteTable
from weir.dataplane.router import DeploymentRouter
from weir.exceptions import BackPressureError
from weir.protos import weir_pb2 as pb
from weir.proxy.admission import (
    ADMITTED_KEY,
    Admission,
    AdmissionGate,
    DeploymentLoad,
    LoopLagMonitor,
    Verdict,
    decide,
    loop_lag,
    queue_share,
    shed_headers,
    shed_response,
    shed_text,
)


def load(pending: int = 0, capacity: int = 8, share: int = 8, queued: int = 0,
         router_sheds: bool = False) -> DeploymentLoad:
    return DeploymentLoad(pending=pending, capacity=capacity, queue_share=share,
                          queued=queued, router_sheds=router_sheds)


def test_queue_share_divides_rounding_up_and_keeps_unbounded() -> None:
    assert queue_share(8, 1) == 8
    assert queue_share(8, 3) == 3
    assert queue_share(1, 4) == 1
    assert queue_share(0, 2) == 0
    assert queue_share(-1, 4) == -1


@pytest.mark.parametrize(("state", "lag", "want"), [
    (load(), 0.0, Verdict.ADMIT),
    (load(pending=15), 0.0, Verdict.ADMIT),  # 8 running + 7 queued: room for one more
    (load(pending=16), 0.0, Verdict.QUEUE_FULL),  # replicas' room + the queue share
    (load(router_sheds=True), 0.0, Verdict.QUEUE_FULL),
    (load(queued=8), 0.0, Verdict.QUEUE_FULL),
    (load(share=3, queued=3), 0.0, Verdict.QUEUE_FULL),  # a worker's share, not the whole
    (load(share=0, pending=8), 0.0, Verdict.QUEUE_FULL),
    (load(share=0, pending=7), 0.0, Verdict.ADMIT),
    (load(pending=8), 0.06, Verdict.LOOP_LATE),  # it would queue behind a late loop
    (load(pending=8), 0.05, Verdict.ADMIT),
    (load(pending=7), 0.5, Verdict.ADMIT),  # a replica has room: it goes at once
    (load(share=-1, pending=1000, router_sheds=True), 9.0, Verdict.ADMIT),  # never sheds
])
def test_decide(state: DeploymentLoad, lag: float, want: Verdict) -> None:
    assert decide(state, lag, 0.05) is want


def test_loop_lag_sees_an_overdue_sample_before_it_runs() -> None:
    assert loop_lag(now=10.0, due=10.01, last_lateness=0.0) == 0.0
    assert loop_lag(now=10.3, due=10.0, last_lateness=0.002) == pytest.approx(0.3)
    assert loop_lag(now=10.0, due=10.01, last_lateness=0.2) == 0.2


def test_queue_full_text_is_the_data_planes_own() -> None:
    text = shed_text(Verdict.QUEUE_FULL, load(queued=8), 0.0, 0.05)
    assert text == str(BackPressureError(num_queued_requests=8, max_queued_requests=8))
    late = shed_text(Verdict.LOOP_LATE, load(pending=8), 0.123, 0.05)
    assert late.startswith("Request dropped due to backpressure") and "123 ms" in late


def test_shed_response_is_a_whole_503_with_retry_after() -> None:
    raw = shed_response("full", keep_alive=True)
    head, body = raw.split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 503 Service Unavailable"
    assert set(lines[1:]) == {b"content-type: text/plain; charset=utf-8",
                              b"content-length: 4", b"retry-after: 1"}
    assert body == b"full"
    assert b"connection: close" in shed_response("full", keep_alive=False)


def test_monitor_measures_a_blocked_loop() -> None:
    async def scenario() -> tuple[float, float]:
        monitor = LoopLagMonitor(interval_s=0.005)
        monitor.start()
        try:
            await asyncio.sleep(0.02)
            calm = monitor.lag()
            time.sleep(0.1)  # noqa: ASYNC251 - the blocked loop the monitor must see
            return calm, monitor.lag()
        finally:
            monitor.stop()

    calm, blocked = asyncio.run(scenario())
    assert blocked >= 0.09
    assert calm < blocked


def plane_with(max_ongoing: int, max_queued: int, replicas: int) -> Any:
    targets = pb.DeploymentTargets(
        app="app", deployment="D", max_ongoing_requests=max_ongoing,
        max_queued_requests=max_queued,
        replicas=[pb.ReplicaTarget(replica_id=f"r{i}", address=f"a{i}")
                  for i in range(replicas)])
    table = RouteTable(routes=[RouteEntry("/d", "app", "D")],
                       deployments={("app", "D"): targets}, http_options={"root_path": ""})
    router = DeploymentRouter("app", "D")
    router.update(max_ongoing, max_queued, [(f"r{i}", f"a{i}", 0) for i in range(replicas)])
    return SimpleNamespace(table=table, routers={("app", "D"): router})


class StillLoop(LoopLagMonitor):
    def lag(self) -> float:
        return 0.0


def test_admission_counts_what_it_admitted_and_sheds_past_the_bound() -> None:
    admission = Admission(plane_with(max_ongoing=1, max_queued=2, replicas=2), workers=2,
                          monitor=StillLoop())
    # No deployment's route: the app answers.
    assert admission.check("/other", "GET") == (None, "")
    for _ in range(3):  # 2 replicas x 1 + ceil(2 / 2)
        key, refusal = admission.check("/d/x", "GET")
        assert key == ("app", "D") and not refusal
        admission.enter(key)
    key, refusal = admission.check("/d", "GET")
    assert key is None and refusal.startswith("Request dropped due to backpressure")
    admission.leave(("app", "D"))
    assert admission.check("/d", "GET") == (("app", "D"), "")


def test_gate_answers_503_without_calling_the_app_and_counts_out() -> None:
    admission = Admission(plane_with(max_ongoing=1, max_queued=0, replicas=1),
                          monitor=StillLoop())
    reached: list[int] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(admission.pending[("app", "D")])

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    gate = AdmissionGate(app, admission)
    asyncio.run(gate({"type": "http", "path": "/d", "method": "GET"}, None, send))
    assert reached == [1] and admission.pending == {}
    admission.enter(("app", "D"))  # one in flight: the replica's room is taken
    asyncio.run(gate({"type": "http", "path": "/d", "method": "GET"}, None, send))
    assert reached == [1] and sent[0]["status"] == 503
    assert (b"retry-after", b"1") in sent[0]["headers"]
    # A request the protocol admitted already is not checked again, only counted out.
    admitted = {"type": "http", "path": "/d", "method": "GET", ADMITTED_KEY: ("app", "D")}
    asyncio.run(gate(admitted, None, send))
    assert reached == [1, 1] and admission.pending == {}


def test_refusal_by_deployment_admits_this_workers_share() -> None:
    # The gRPC ingress asks by deployment, once it has routed a call: 1 replica x 1 slot
    # plus ceil(3 / 2) queued for one of 2 workers; the whole bound (1 + 3) for one worker.
    for workers, admitted in ((2, 3), (1, 4)):
        admission = Admission(plane_with(max_ongoing=1, max_queued=3, replicas=1),
                              workers=workers, monitor=StillLoop())
        for _ in range(admitted):
            assert admission.refusal(("app", "D")) == ""
            admission.enter(("app", "D"))
        assert admission.refusal(("app", "D")).startswith("Request dropped due to backpressure")
        admission.leave(("app", "D"))
        assert admission.refusal(("app", "D")) == ""
    # A deployment the data plane does not know yet: it decides.
    assert admission.refusal(("app", "Other")) == ""
    # max_queued_requests=-1 never sheds, however many are in flight (Ray's rule).
    unbounded = Admission(plane_with(max_ongoing=1, max_queued=-1, replicas=1),
                          monitor=StillLoop())
    for _ in range(5):
        unbounded.enter(("app", "D"))
    assert unbounded.refusal(("app", "D")) == ""


def test_shed_headers_are_the_shed_responses() -> None:
    assert shed_headers(4, keep_alive=True) == [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"4"),
        (b"retry-after", b"1")]
    assert shed_headers(4, keep_alive=False)[-1] == (b"connection", b"close")
