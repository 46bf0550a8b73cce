"""Ray's LoggingConfig reaches the replicas (issue 14, gap 7): serve.run's for the whole app,
a deployment's own winning over it, against a real local cluster."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningCluster, driver_connected, wait_for
from weir import serve
from weir.serve.config import LoggingConfig


@pytest.fixture(scope="module")
def driver(cluster: RunningCluster) -> Iterator[RunningCluster]:
    with driver_connected(cluster):
        yield cluster


def lines_in(directory: Path, deployment: str) -> list[str]:
    files = list(directory.glob(f"replica_logs_{deployment}_*.log"))
    return [line for f in files for line in f.read_text().splitlines()]


def test_logging_config_of_app_and_deployment(driver: RunningCluster, tmp_path: Path) -> None:
    app_dir, own_dir = tmp_path / "app", tmp_path / "own"

    @serve.deployment(logging_config=LoggingConfig(
        log_level="DEBUG", logs_dir=str(own_dir), additional_log_standard_attrs=["funcName"]))
    class Child:
        def __call__(self) -> str:
            logging.getLogger("ray.serve").debug("child debug line")
            return "child"

    @serve.deployment
    class Parent:
        def __init__(self, child: serve.handle.DeploymentHandle) -> None:
            self.child = child

        async def __call__(self) -> str:
            logging.getLogger("ray.serve").info("parent info line")
            logging.getLogger("ray.serve").debug("parent debug line")
            return await self.child.remote()

    handle = serve.run(Parent.bind(Child.bind()), name="logs", route_prefix="/logs",
                       logging_config={"encoding": "JSON", "logs_dir": str(app_dir),
                                       "enable_access_log": False})
    assert handle.remote().result(timeout_s=10) == "child"

    # The app's config: JSON lines in its logs_dir, INFO and up, no access lines.
    parent = wait_for(lambda: [json.loads(x) for x in lines_in(app_dir, "Parent")
                               if "parent info line" in x], 10, "the parent's line")
    assert parent[0]["deployment"] == "Parent" and parent[0]["level"] == "info"
    every = [json.loads(x) for x in lines_in(app_dir, "Parent")]
    assert not [e for e in every if e["event"] in ("access", "parent debug line")]
    # The deployment's own config wins: TEXT, DEBUG, the access log, funcName added.
    child = wait_for(lambda: [x for x in lines_in(own_dir, "Child") if "access" in x], 10,
                     "the child's access line")
    assert "method=__call__" in child[0] and "status=OK" in child[0]
    debug = [x for x in lines_in(own_dir, "Child") if "child debug line" in x]
    assert debug and "funcName=__call__" in debug[0] and not debug[0].startswith("{")
    assert not list(own_dir.glob("replica_logs_Parent_*"))
    serve.delete("logs")
