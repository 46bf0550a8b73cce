"""Lightweight updates (num_replicas, user_config) keep replicas; other changes roll with
zero failed requests."""

from __future__ import annotations

import threading
from typing import Any

import requests

from tests.e2e.conftest import ROOT, RunningCluster, wait_for


def deploy(cluster: RunningCluster, **deployment: Any) -> None:
    app = {"name": "greet", "import_path": "tests.e2e.apps.configurable:app",
           "route_prefix": "/greet", "runtime_env": {"working_dir": str(ROOT)},
           "deployments": [{"name": "Greeter", **deployment}] if deployment else []}
    cluster.client.deploy({"applications": [app]}, partial=True)


def running_pids(cluster: RunningCluster) -> set[int]:
    return {r["pid"] for r in cluster.client.list_replicas()
            if r["app"] == "greet" and r["state"] == "RUNNING"}


def test_user_config_change_reconfigures_without_restart(cluster: RunningCluster) -> None:
    deploy(cluster)
    cluster.wait_status("greet", "RUNNING")
    assert cluster.get("/greet").json()["text"] == "hello!"
    pids = running_pids(cluster)
    assert len(pids) == 2
    deploy(cluster, user_config={"greeting": "bonjour"})
    wait_for(lambda: all(cluster.get("/greet").json()["text"] == "bonjour!" for _ in range(6)),
             15, "the new user_config on every replica")
    assert running_pids(cluster) == pids


def test_scale_up_keeps_running_replicas(cluster: RunningCluster) -> None:
    pids = running_pids(cluster)
    deploy(cluster, user_config={"greeting": "bonjour"}, num_replicas=3)
    now = wait_for(lambda: len(p := running_pids(cluster)) == 3 and p, 30, "a third replica")
    assert pids <= now
    deploy(cluster, user_config={"greeting": "bonjour"}, num_replicas=2)
    after = wait_for(lambda: len(p := running_pids(cluster)) == 2 and p, 30, "back to two")
    assert after <= now


def test_code_change_rolls_with_zero_failed_requests(cluster: RunningCluster) -> None:
    old = running_pids(cluster)
    failures: list[str] = []
    done = threading.Event()
    count = [0]

    def load() -> None:
        session = requests.Session()
        while not done.is_set():
            try:
                r = session.get(cluster.url + "/greet", timeout=10)
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:100]}")
            except requests.RequestException as exc:
                failures.append(repr(exc))
            count[0] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        deploy(cluster, user_config={"greeting": "bonjour"}, num_replicas=2,
               max_ongoing_requests=7)
        wait_for(lambda: len(p := running_pids(cluster)) == 2 and not (p & old), 60,
                 "the new version to replace the old")
        cluster.wait_status("greet", "RUNNING")
    finally:
        done.set()
        for t in threads:
            t.join()
    assert count[0] > 20
    assert failures == []
