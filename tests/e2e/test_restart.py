"""A `weir start` cluster that loses every process (a power loss) comes back from
`weir start` with its applications: the embedded etcd keeps its data under WEIR_HOME."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli_workflow import Cli, app_status
from weir.processes import free_port, pid_runs, replica_pids

CONFIG = """\
applications:
- name: kept
  route_prefix: /kept
  import_path: tests.e2e.apps.basic:echo
"""


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[Cli, Path, int]]:
    home = tmp_path / "home"
    run = Cli(home)
    port = free_port()
    try:
        yield run, home, port
    finally:
        run("shutdown", "-y", ok=False)


def pids_of(home: Path) -> tuple[list[int], str]:
    state = json.loads((home / "cluster.json").read_text())
    return list(state["pids"].values()), state["cluster_id"]


def test_a_crashed_cluster_comes_back_with_its_applications(
        home: tuple[Cli, Path, int], tmp_path: Path) -> None:
    run, weir_home, port = home
    run("start", "--http-port", str(port), "--admin-port", "0")
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    run("deploy", str(config))
    wait_for(lambda: app_status(run, "kept").get("app_status", {}).get("status") == "RUNNING",
             60, "kept to be RUNNING")
    # A power loss: every process of the cluster dies at once.
    pids, cluster_id = pids_of(weir_home)
    victims = pids + replica_pids(cluster_id)
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(pid_runs(p) for p in victims), 10, "every process gone")

    run("start", "--http-port", str(port), "--admin-port", "0")
    status = wait_for(lambda: (s := app_status(run, "kept")).get("app_status", {}).get(
        "status") == "RUNNING" and s, 60, "kept to be RUNNING again")
    assert status["deployment_statuses"][0]["status"] == "HEALTHY"
    assert requests.get(f"http://127.0.0.1:{port}/kept", timeout=10).status_code == 200

    run("shutdown", "-y")
    run("start", "--http-port", str(port), "--admin-port", "0")
    assert "kept" not in run.yaml("status").get("applications", {}), \
        "weir shutdown deletes the applications"
    run("deploy", str(config))
    wait_for(lambda: app_status(run, "kept").get("app_status", {}).get("status") == "RUNNING",
             60, "kept deployed again")
    run("shutdown", "-y")
    run("start", "--http-port", str(port), "--admin-port", "0", "--fresh")
    assert "kept" not in run.yaml("status").get("applications", {}), "--fresh starts empty"
