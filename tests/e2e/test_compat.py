"""Ray Serve compatibility gaps (issue 14), each against a real local cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import ROOT, RunningCluster, driver_connected
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
