"""Ray Serve compatibility gaps (issue 14), each against a real local cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import ROOT, RunningCluster, driver_connected, wait_for
from weir import serve


@pytest.fixture(scope="module")
def driver(cluster: RunningCluster) -> Iterator[RunningCluster]:
    with driver_connected(cluster):
        yield cluster


def versioned(text: str) -> serve.Deployment:
    @serve.deployment(name="Versioned")
    class Versioned:
        def __call__(self) -> str:
            return text

    return Versioned


def test_serve_run_returns_once_the_new_version_serves(driver: RunningCluster) -> None:
    # Redeploys in quick succession: each must answer with its own code at once, over HTTP
    # and through the handle serve.run returns (the old code used to answer for ~1 s).
    for i in range(3):
        handle = serve.run(versioned(f"v{i}").bind(), name="versions", route_prefix="/versions")
        assert driver.get("/versions").text == f"v{i}"
        assert handle.remote().result(timeout_s=10) == f"v{i}"
    # A new route prefix for the same app serves as soon as serve.run returns.
    serve.run(versioned("moved").bind(), name="versions", route_prefix="/moved")
    assert driver.get("/moved").text == "moved"
    serve.delete("versions")


def test_weir_deploy_wait(driver: RunningCluster, tmp_path: Path) -> None:
    def deploy(greeting: str) -> subprocess.CompletedProcess[str]:
        config = {"applications": [{
            "name": "waited", "route_prefix": "/waited",
            "import_path": "tests.e2e.apps.configurable:app",
            "runtime_env": {"working_dir": str(ROOT)},
            "deployments": [{"name": "Greeter", "num_replicas": 1,
                             "user_config": {"greeting": greeting}}]}]}
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "WEIR_TOKEN": driver.info.token}
        return subprocess.run(
            [sys.executable, "-m", "weir.cli", "deploy", str(path), "--wait",
             "--address", driver.info.address], cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=120)

    # `weir deploy` replaces the whole goal: the other tests' apps go, this one comes.
    for greeting in ("hi", "bye"):
        proc = deploy(greeting)
        assert proc.returncode == 0, proc.stderr
        assert "RUNNING" in proc.stdout
        assert driver.get("/waited").json()["text"] == f"{greeting}!"


def test_request_id_is_in_the_replicas_log_lines(driver: RunningCluster) -> None:
    @serve.deployment(name="Logs")
    def logs() -> str:
        import logging

        logging.getLogger("ray.serve").info("user line from the replica")
        return "logged"

    serve.run(logs.bind(), name="logs", route_prefix="/logs")
    reply = driver.get("/logs", headers={"X-Request-ID": "trace-me-7"})
    assert reply.text == "logged" and reply.headers["x-request-id"] == "trace-me-7"
    ids = [r["replica_id"] for r in driver.client.list_replicas() if r["app"] == "logs"]
    logs_dir = Path(driver.info.temp_dir) / "logs"
    files = [logs_dir / f"replica-{i.replace('#', '_')}.log" for i in ids]
    assert files

    def logged_line() -> str | None:
        text = "".join(f.read_text() for f in files if f.exists())
        return next((line for line in text.splitlines()
                     if "user line from the replica" in line), None)

    line = wait_for(logged_line, 10, "the user's log line")
    assert "request_id=trace-me-7" in line
    serve.delete("logs")


def test_model_multiplexing(driver: RunningCluster) -> None:
    from tests.e2e.apps.multiplexed import app
    from weir import context

    handle = serve.run(app, name="mux", route_prefix="/mux")
    served: list[dict[str, Any]] = []

    def over_http(model_id: str) -> dict[str, Any]:
        answer = driver.get("/mux", headers={"serve_multiplexed_model_id": model_id}).json()
        served.append(answer)
        return answer  # type: ignore[no-any-return]

    def by_handle(model_id: str) -> dict[str, Any]:
        answer = handle.options(multiplexed_model_id=model_id).remote().result(timeout_s=10)
        served.append(answer)
        return answer  # type: ignore[no-any-return]

    # Over HTTP: the replica that loaded "a" serves every later call for "a".
    first = over_http("a")
    assert first["model"] == "a"
    holder = first["replica"]
    assert {over_http("a")["replica"] for _ in range(6)} == {holder}

    # The replica reported it: this process's route table says where "a" is...
    plane = context.submit(context.get_data_plane()).result()

    def held() -> dict[str, list[str]]:
        table = plane.table
        targets = table.deployments.get(("mux", "Multiplexed")) if table else None
        return {r.replica_id: list(r.multiplexed_model_ids)
                for r in (targets.replicas if targets else [])}

    wait_for(lambda: held().get(holder) == ["a"], 10, "the route table to show model a")
    # ...so handle calls for "a" go there too, and a new model goes to the other replica.
    assert {by_handle("a")["replica"] for _ in range(6)} == {holder}
    other = by_handle("b")["replica"]
    assert other != holder
    # More models than the two replicas hold: each evicts its least recently used one,
    # whose __del__ runs.
    for model_id in ("c", "d", "e", "f", "a"):
        by_handle(model_id)
    lru: dict[str, list[str]] = {}
    expected_released: dict[str, list[str]] = {}
    for answer in served:
        models = lru.setdefault(answer["replica"], [])
        released = expected_released.setdefault(answer["replica"], [])
        if answer["model"] in models:
            models.remove(answer["model"])
        elif len(models) == 2:
            released.append(models.pop(0))
        models.append(answer["model"])
        assert answer["released"] == released, (answer, served)
    assert sum(len(r) for r in expected_released.values()) >= 2
    serve.delete("mux")
def test_serve_start_logging_config_reaches_controllers_and_proxies(
        driver: RunningCluster, tmp_path: Path) -> None:
    logs = tmp_path / "system-logs"
    serve.start(logging_config={"encoding": "JSON", "log_level": "DEBUG",
                                "logs_dir": str(logs)})
    try:
        def json_lines(component: str) -> list[dict[str, object]]:
            out = []
            for path in logs.glob(f"{component}_*.log"):
                out += [json.loads(line) for line in path.read_text().splitlines()
                        if line.startswith("{")]
            return out

        for component in ("controller", "proxy"):
            lines = wait_for(lambda c=component: json_lines(c), 15,  # type: ignore[misc]
                             f"the {component}s to log JSON lines under logs_dir")
            assert all(line["component"] == component for line in lines)
    finally:
        serve.start(logging_config={})
