"""The status page's document and token check (pure), and its files in the package."""

from __future__ import annotations

from weir.proxy.dashboard import (
    HISTORY_SHOWN,
    STATIC_FILES,
    Dashboard,
    _static,
    authorized,
    dashboard_document,
)

STATUS = {
    "applications": {"a": {
        "app_status": {"status": "RUNNING", "message": "", "deployment_timestamp": 5.0},
        "route_prefix": "/a",
        "deployment_statuses": [{"name": "D", "status": "HEALTHY", "message": "",
                                 "replica_states": {"RUNNING": 2}}]}},
    "controllers": [{"address": "c:1", "role": "leader"}], "proxies": [{"id": "p"}],
}
REPLICAS = [{"replica_id": f"a#D#{i}", "app": "a", "deployment": "D", "state": "RUNNING",
             "ongoing": i, "node_id": "n1", "pid": 10 + i, "version": "v"} for i in (2, 1)]


def test_replicas_sit_under_their_deployment_with_node_state_and_depth() -> None:
    doc = dashboard_document(STATUS, REPLICAS, [], [], now=9.0)
    [app] = doc["applications"]
    assert (app["name"], app["status"], app["route_prefix"]) == ("a", "RUNNING", "/a")
    [dep] = app["deployments"]
    assert dep["replica_states"] == {"RUNNING": 2}
    assert [(r["replica_id"], r["node_id"], r["state"], r["queue_depth"])
            for r in dep["replicas"]] == [("a#D#1", "n1", "RUNNING", 1),
                                          ("a#D#2", "n1", "RUNNING", 2)]


def test_events_and_configs_come_newest_first_and_bounded() -> None:
    events = [{"time": t, "kind": "deploy", "message": "m", "app": "a"} for t in range(3)]
    history = [{"revision": str(i), "timestamp": float(i),
                "config": {"applications": [{"name": "a"}, {}]}} for i in range(30)]
    doc = dashboard_document(STATUS, [], events, history, now=1.0)
    assert [e["time"] for e in doc["events"]] == [2, 1, 0]
    assert len(doc["config_history"]) == HISTORY_SHOWN
    assert doc["config_history"][0] == {"revision": "29", "timestamp": 29.0,
                                        "applications": ["a", "default"]}


def test_the_token_is_asked_only_when_set() -> None:
    assert authorized([], "")
    assert not authorized([], "t")
    assert not authorized([(b"authorization", b"Bearer x")], "t")
    assert authorized([(b"authorization", b"Bearer t")], "t")


def test_the_pages_files_ship_in_the_package() -> None:
    for name in STATIC_FILES:
        assert _static(name)
    assert b"/-/api/status" in _static("dashboard.js")
    assert b"https://" not in _static("dashboard.html")  # nothing from a CDN
    assert Dashboard.handles("/-/dashboard") and Dashboard.handles("/-/dashboard/dashboard.js")
    assert Dashboard.handles("/-/api/status") and not Dashboard.handles("/-/dashboardx")
