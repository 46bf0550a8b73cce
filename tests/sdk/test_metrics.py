"""weir.metrics on a fresh registry: label children looked up once and reused, gauges read
at scrape time, the leader's snapshot as a pure function, and the error rule."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from weir.metrics import (
    ControllerMetrics,
    HandleMetrics,
    ProxyMetrics,
    ReplicaMetrics,
    cluster_snapshot,
    failed,
)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_proxy_requests_are_counted_with_one_child_per_label_values() -> None:
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry)
    for _ in range(3):
        metrics.http("app", "Front", "/app", "GET", 200, 0.002)
    metrics.http("app", "Front", "/app", "GET", 503, 0.0)
    assert len(metrics.http_tally.records) == 2
    got = samples(registry)
    labels = (("application", "app"), ("deployment", "Front"), ("method", "GET"),
              ("route", "/app"))
    assert got[("weir_serve_num_http_requests_total",
                tuple(sorted((*labels, ("status_code", "200")))))] == 3
    assert got[("weir_serve_http_request_latency_ms_count",
                tuple(sorted((*labels, ("status_code", "200")))))] == 3
    # 2 ms falls in the 2 ms bucket, not the 1 ms one.
    assert got[("weir_serve_http_request_latency_ms_bucket",
                tuple(sorted((*labels, ("le", "2.0"), ("status_code", "200")))))] == 3
    assert got[("weir_serve_http_request_latency_ms_bucket",
                tuple(sorted((*labels, ("le", "1.0"), ("status_code", "200")))))] == 0
    # Only the 503 is an error (Ray's non-200).
    assert got[("weir_serve_num_http_error_requests_total",
                tuple(sorted((*labels, ("error_code", "503")))))] == 1
    assert not [k for k in got if k[0] == "weir_serve_num_http_error_requests_total"
                and ("error_code", "200") in k[1]]


def test_ongoing_and_queued_requests_are_read_when_scraped() -> None:
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry)

    class Router:
        num_queued = 4

    metrics.follow_queues(lambda: {("app", "Front"): Router()})
    metrics.ongoing_http = 7
    got = samples(registry)
    assert got[("weir_serve_num_ongoing_http_requests", ())] == 7
    assert got[("weir_serve_deployment_queued_queries",
                (("application", "app"), ("deployment", "Front")))] == 4
    Router.num_queued = 0
    assert samples(registry)[("weir_serve_deployment_queued_queries",
                              (("application", "app"), ("deployment", "Front")))] == 0


def test_grpc_requests_count_codes_other_than_ok_as_errors() -> None:
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry)
    metrics.grpc("app", "Front", "Greet", "OK", 0.001)
    metrics.grpc("app", "Front", "Greet", "RESOURCE_EXHAUSTED", 0.0)
    got = samples(registry)
    base = (("application", "app"), ("deployment", "Front"), ("method", "Greet"))
    assert got[("weir_serve_num_grpc_requests_total",
                tuple(sorted((*base, ("status_code", "OK")))))] == 1
    assert got[("weir_serve_num_grpc_error_requests_total",
                tuple(sorted((*base, ("error_code", "RESOURCE_EXHAUSTED")))))] == 1


def test_a_grpc_call_is_labelled_by_where_it_was_routed() -> None:
    import contextvars

    import grpc

    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry)

    def call(code: grpc.StatusCode | None) -> str:
        started = time.perf_counter()
        metrics.grpc_routed("app", "Front")
        assert metrics.ongoing_grpc == 1
        return metrics.grpc_finished("/pkg.Svc/Greet", code, started)

    assert contextvars.Context().run(call, None) == "OK"
    assert contextvars.Context().run(call, grpc.StatusCode.RESOURCE_EXHAUSTED) == \
        "RESOURCE_EXHAUSTED"
    # Refused before routing (no application matched): counted without a deployment.
    assert metrics.grpc_finished("/pkg.Svc/Greet", grpc.StatusCode.NOT_FOUND, 0.0) == \
        "NOT_FOUND"
    assert metrics.ongoing_grpc == 0
    got = samples(registry)
    base = (("application", "app"), ("deployment", "Front"), ("method", "/pkg.Svc/Greet"))
    assert got[("weir_serve_num_grpc_requests_total",
                tuple(sorted((*base, ("status_code", "OK")))))] == 1
    assert got[("weir_serve_num_shed_requests_total", (
        ("application", "app"), ("deployment", "Front"), ("protocol", "grpc")))] == 1
    assert got[("weir_serve_num_grpc_requests_total", (
        ("application", ""), ("deployment", ""), ("method", "/pkg.Svc/Greet"),
        ("status_code", "NOT_FOUND")))] == 1


def test_replica_labels_come_from_its_identity_once_known() -> None:
    registry = CollectorRegistry()
    metrics = ReplicaMetrics(registry)
    who = ["", "", ""]
    metrics.identify_by(lambda: (who[0], who[1], who[2]))
    metrics.follow_load(lambda: 2)
    metrics.refused()  # before the controller said what it runs
    who[:] = ["app", "Front", "app#Front#1"]
    metrics.served("/app", "200", 0.01)
    metrics.served("/app", "500", 0.01)
    metrics.served("", "TIMEOUT", 0.01)
    got = samples(registry)
    me = (("application", "app"), ("deployment", "Front"), ("replica", "app#Front#1"))
    assert got[("weir_serve_deployment_request_counter_total",
                tuple(sorted((*me, ("route", "/app")))))] == 2
    assert got[("weir_serve_deployment_error_counter_total",
                tuple(sorted((*me, ("route", "/app")))))] == 1
    assert got[("weir_serve_deployment_error_counter_total",
                tuple(sorted((*me, ("route", "")))))] == 1
    assert got[("weir_serve_replica_processing_queries", me)] == 2
    assert got[("weir_serve_replica_rejected_requests_total",
                (("application", ""), ("deployment", ""), ("replica", "")))] == 1


def test_failed_outcomes() -> None:
    assert [failed(o) for o in ("200", "404", "500", "503", "OK", "ERROR", "TIMEOUT",
                                "USER_ERROR")] == [False, False, True, True, False, True,
                                                   True, True]


def test_handle_calls_by_callee_and_caller() -> None:
    registry = CollectorRegistry()
    HandleMetrics(registry).call("app", "Leaf", "app/Front")
    assert samples(registry)[("weir_serve_handle_request_counter_total", (
        ("application", "app"), ("caller", "app/Front"), ("deployment", "Leaf")))] == 1


def test_cluster_snapshot_counts_states_and_marks_autoscaled_targets() -> None:
    snapshot = cluster_snapshot(
        [("app", "A", "r1", "RUNNING", True), ("app", "A", "r2", "RUNNING", False),
         ("app", "A", "r3", "STARTING", False), ("app", "B", "r4", "STOPPING", False)],
        {("app", "A"): 3, ("app", "B"): 0}, {("app", "A")})
    assert snapshot.replica_states == {("app", "A", "RUNNING"): 2, ("app", "A", "STARTING"): 1,
                                       ("app", "B", "STOPPING"): 1}
    assert snapshot.replica_healthy == {("app", "A", "r1"): 1, ("app", "A", "r2"): 0,
                                        ("app", "A", "r3"): 0, ("app", "B", "r4"): 0}
    assert snapshot.targets == {("app", "A"): 3, ("app", "B"): 0}
    assert snapshot.autoscaling_targets == {("app", "A"): 3}


def test_controller_gauges_follow_its_snapshot_and_leadership() -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    metrics.leadership(True)
    metrics.snapshot = cluster_snapshot([("app", "A", "r1", "RUNNING", True)],
                                        {("app", "A"): 1}, set())
    got = samples(registry)
    assert got[("weir_serve_controller_is_leader", ())] == 1
    assert got[("weir_serve_controller_leader_changes_total", ())] == 1
    assert got[("weir_serve_deployment_replicas", (
        ("application", "app"), ("deployment", "A"), ("state", "RUNNING")))] == 1
    metrics.leadership(True)  # no change
    metrics.leadership(False)
    got = samples(registry)
    assert got[("weir_serve_controller_leader_changes_total", ())] == 2
    assert got[("weir_serve_controller_is_leader", ())] == 0
    # A standby exports no cluster state: the leader's is the one to read.
    assert not [k for k in got if k[0] == "weir_serve_deployment_replicas"]


def defined_metric_names() -> set[str]:
    registry = CollectorRegistry()
    proxy, replica = ProxyMetrics(registry), ReplicaMetrics(registry)
    proxy.follow_queues(dict)
    replica.follow_load(lambda: 0)
    HandleMetrics(registry)
    ControllerMetrics(registry)
    return {family.name for family in registry.collect()}


def referenced(text: str) -> set[str]:
    """The metric names `text` mentions, without the suffixes of counters and histograms."""
    import re

    return {re.sub(r"_(total|bucket|sum|count)$", "", name)
            for name in re.findall(r"\bweir_serve_[a-z_]+", text)}


def test_the_docs_table_and_the_dashboard_name_exactly_the_metrics_defined() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    defined = defined_metric_names()
    docs = referenced((root / "docs" / "observability.md").read_text())
    assert docs == defined, (f"undocumented: {sorted(defined - docs)}; "
                             f"documented but not defined: {sorted(docs - defined)}")
    dashboard = (root / "deploy" / "grafana" / "weir-dashboard.json").read_text()
    import json

    exprs = " ".join(t["expr"] for p in json.loads(dashboard)["panels"]
                     for t in p.get("targets", []))
    assert referenced(exprs) <= defined, sorted(referenced(exprs) - defined)
    assert len(referenced(exprs)) >= 15
