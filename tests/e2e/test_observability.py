"""Metrics and tracing against a real cluster (issue 16, parts 1 and 2): the proxy's
/-/metrics, the replicas' and the controller's metrics ports (listed by `weir status`) move
as requests are served, shed (503) and timed out (408); a traceparent sent in reaches the
log lines of the ingress replica and of the deployment it calls through a handle."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ROOT, RunningCluster, wait_for

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def scrape(url: str) -> str:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def replica_metrics(cluster: RunningCluster, deployment: str) -> str:
    """Where `weir status` says the deployment's replica serves its metrics."""
    for node in cluster.client.get_status().get("nodes", []):
        for replica in node["replicas"]:
            if replica["deployment"] == f"observed/{deployment}" and replica.get("metrics"):
                return f"http://{replica['metrics']}/"
    raise AssertionError(f"weir status lists no metrics address for {deployment}")


def log_lines(directory: Path, deployment: str) -> list[dict[str, Any]]:
    return [json.loads(line) for f in directory.glob(f"replica_*_{deployment}_*.log")
            for line in f.read_text().splitlines() if line.startswith("{")]


def test_metrics_move_and_traceparent_reaches_every_hop(cluster: RunningCluster,
                                                        tmp_path: Path) -> None:
    cluster.client.deploy({
        "http_options": {"request_timeout_s": 1.0},
        "applications": [{
            "name": "observed", "import_path": "tests.e2e.apps.observed:app",
            "route_prefix": "/observed", "runtime_env": {"working_dir": str(ROOT)},
            "logging_config": {"encoding": "JSON", "logs_dir": str(tmp_path)}}],
    }, partial=True)
    cluster.wait_status("observed", "RUNNING")
    # With no queue allowed (max_queued_requests=0), a request that comes before the
    # proxy's route table lists the replica is shed: wait until the proxy routes to it.
    wait_for(lambda: cluster.get("/observed").status_code == 200, 15,
             "the proxy to route to the new replica")
    proxy = cluster.client.get_status()["proxies"][0]["metrics"]
    assert proxy == cluster.url + "/-/metrics"
    ok = {"application": "observed", "deployment": "Front", "route": "/observed",
          "method": "GET"}
    before = scrape(proxy)

    # Served, with a traceparent.
    r = cluster.get("/observed", headers={"traceparent": TRACEPARENT})
    assert r.status_code == 200 and r.text == "HI"

    # Shed: one request holds the only slot (the replica says so), the next gets 503.
    front = replica_metrics(cluster, "Front")
    slow = threading.Thread(target=cluster.get, args=("/observed?s=0.8",))
    slow.start()
    try:
        wait_for(lambda: value(scrape(front), "weir_serve_replica_processing_queries") == 1,
                 5, "the replica to report one request in progress")
        assert cluster.get("/observed").status_code == 503
    finally:
        slow.join()
    # Timed out: past request_timeout_s.
    assert cluster.get("/observed?s=5").status_code == 408

    after = scrape(proxy)
    total = "weir_serve_num_http_requests_total"
    assert value(after, total, **ok, status_code="200") - value(before, total, **ok,
                                                                 status_code="200") == 2
    assert value(after, total, **ok, status_code="503") == value(before, total, **ok,
                                                                  status_code="503") + 1
    assert value(after, total, **ok, status_code="408") == value(before, total, **ok,
                                                                  status_code="408") + 1
    assert value(after, "weir_serve_num_shed_requests_total", deployment="Front") >= 1
    assert value(after, "weir_serve_num_timed_out_requests_total", deployment="Front") >= 1
    assert value(after, "weir_serve_http_request_latency_ms_count", **ok) >= 4
    assert value(after, "weir_serve_num_http_error_requests_total", **ok,
                 error_code="503") >= 1

    # The replicas: user code served and timed, handle calls between them counted.
    front_text = scrape(front)
    mine = {"application": "observed", "deployment": "Front", "route": "/observed"}
    assert value(front_text, "weir_serve_deployment_request_counter_total", **mine) >= 3
    assert value(front_text, "weir_serve_deployment_processing_latency_ms_count", **mine) >= 3
    assert value(front_text, "weir_serve_deployment_error_counter_total", **mine) >= 1
    assert value(front_text, "weir_serve_handle_request_counter_total", deployment="Leaf",
                 caller="observed/Front") >= 2
    leaf_text = scrape(replica_metrics(cluster, "Leaf"))
    assert value(leaf_text, "weir_serve_deployment_request_counter_total",
                 deployment="Leaf") >= 2

    # The controller: its loop runs, it leads, it sees the replicas running.
    leader = [c for c in cluster.client.get_status()["controllers"] if c["role"] == "leader"]
    controller = scrape(f"http://{leader[0]['metrics']}/")
    assert value(controller, "weir_serve_controller_num_control_loops_total") > 0
    assert value(controller, "weir_serve_controller_is_leader") == 1
    assert value(controller, "weir_serve_deployment_replicas", deployment="Front",
                 state="RUNNING") == 1
    assert value(controller, "weir_serve_deployment_target_replicas", deployment="Leaf") == 1

    # The traceparent, in both replicas' lines for that request.
    for deployment, event in (("Front", "front working"), ("Leaf", "leaf working")):
        lines = wait_for(lambda d=deployment, e=event: [  # type: ignore[misc]
            x for x in log_lines(tmp_path, d) if x["event"] == e], 10, f"{deployment}'s line")
        assert [x.get("traceparent") for x in lines].count(TRACEPARENT) == 1, lines
    cluster.client.delete_apps(["observed"])
