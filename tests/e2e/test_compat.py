"""Ray Serve compatibility gaps (issue 14), each against a real local cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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
