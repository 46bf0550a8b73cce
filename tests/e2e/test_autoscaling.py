"""Autoscaling on a real cluster: load raises the replica count within the delays and it
falls back after; a deployment goes to zero and comes back on one request; changing
autoscaling_config restarts no replica. Delays are small so each test takes seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.e2e.conftest import ROOT, RunningCluster, wait_for

QUICK = {"target_ongoing_requests": 1, "look_back_period_s": 0.5, "upscale_delay_s": 0.5,
         "downscale_delay_s": 1.0}


def deploy(cluster: RunningCluster, name: str, **autoscaling: Any) -> None:
    app = {"name": name, "import_path": "tests.e2e.apps.autoscaled:app",
           "route_prefix": f"/{name}", "runtime_env": {"working_dir": str(ROOT)},
           "deployments": [{"name": "Sleeper", "autoscaling_config": autoscaling}]}
    cluster.client.deploy({"applications": [app]}, partial=True)


def running(cluster: RunningCluster, name: str) -> dict[str, int]:
    return {r["replica_id"]: r["pid"] for r in cluster.client.list_replicas()
            if r["app"] == name and r["state"] == "RUNNING"}


def live(cluster: RunningCluster, name: str) -> int:
    return sum(1 for r in cluster.client.list_replicas() if r["app"] == name)


def autoscaling(cluster: RunningCluster, name: str) -> dict[str, Any]:
    return cluster.app_status(name)["deployment_statuses"][0]["autoscaling"]  # type: ignore[no-any-return]


class Load:
    """`clients` threads calling the app back to back until stopped."""

    def __init__(self, cluster: RunningCluster, path: str, clients: int) -> None:
        self.failures: list[str] = []
        self.done = threading.Event()
        self.count = 0
        self.threads = [threading.Thread(target=self._run, args=(cluster.url + path,))
                        for _ in range(clients)]

    def _run(self, url: str) -> None:
        session = requests.Session()
        while not self.done.is_set():
            try:
                r = session.get(url, timeout=30)
                if r.status_code != 200:
                    self.failures.append(f"{r.status_code} {r.text[:100]}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            self.count += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for t in self.threads:
            t.join()


@pytest.fixture(autouse=True)
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, float]]:
    """Timings a test measured, printed for docs/autoscaling.md."""
    measured: dict[str, float] = {}
    yield measured
    if measured:
        print(f"\n{request.node.name}: " + ", ".join(f"{k}={v:.2f}s"
                                                   for k, v in measured.items()))


def test_load_raises_the_replica_count_and_it_falls_back_after(
        cluster: RunningCluster, figures: dict[str, float]) -> None:
    deploy(cluster, "scale", min_replicas=1, max_replicas=3, **QUICK)
    cluster.wait_status("scale", "RUNNING")
    assert len(running(cluster, "scale")) == 1
    with Load(cluster, "/scale?s=0.2", clients=4) as load:
        start = time.monotonic()
        # 4 requests in flight, 1 wanted per replica: as many as max_replicas allows.
        wait_for(lambda: autoscaling(cluster, "scale")["target_num_replicas"] == 3, 10,
                 "the target to rise to 3")
        figures["target_raised"] = time.monotonic() - start
        wait_for(lambda: len(running(cluster, "scale")) == 3, 30, "3 running replicas")
        figures["three_running"] = time.monotonic() - start
    assert load.failures == [] and load.count > 10
    stopped = time.monotonic()
    wait_for(lambda: live(cluster, "scale") == 1, 30, "back to one replica")
    figures["back_to_one"] = time.monotonic() - stopped
    assert figures["back_to_one"] >= QUICK["downscale_delay_s"]
    assert cluster.app_status("scale")["app_status"]["status"] == "RUNNING"


def test_scale_to_zero_and_back_on_one_request(cluster: RunningCluster,
                                               figures: dict[str, float]) -> None:
    deploy(cluster, "zero", min_replicas=0, initial_replicas=1, max_replicas=2,
           downscale_to_zero_delay_s=0.5, **QUICK)
    cluster.wait_status("zero", "RUNNING")
    # With no traffic the replica may already be stopping (0.5 s): at most one ran.
    assert len(running(cluster, "zero")) <= 1
    # No traffic at all: the replica stops after downscale_to_zero_delay_s.
    wait_for(lambda: live(cluster, "zero") == 0, 30, "zero replicas")
    assert autoscaling(cluster, "zero")["target_num_replicas"] == 0
    start = time.monotonic()
    r = cluster.get("/zero", timeout=30)
    figures["zero_to_first_response"] = time.monotonic() - start
    assert r.status_code == 200, r.text
    assert len(running(cluster, "zero")) == 1
    # And back to zero once idle again.
    wait_for(lambda: live(cluster, "zero") == 0, 30, "zero replicas again")


def test_changing_autoscaling_config_restarts_no_replica(cluster: RunningCluster) -> None:
    deploy(cluster, "light", min_replicas=2, max_replicas=4, **QUICK)
    cluster.wait_status("light", "RUNNING")
    before = wait_for(lambda: len(p := running(cluster, "light")) == 2 and p, 30, "2 replicas")
    deploy(cluster, "light", min_replicas=3, max_replicas=5, **QUICK)
    after = wait_for(lambda: len(p := running(cluster, "light")) == 3 and p, 30, "3 replicas")
    assert before.items() <= after.items()
    assert autoscaling(cluster, "light")["max_replicas"] == 5
    cluster.client.delete_apps(["scale", "zero", "light"])
