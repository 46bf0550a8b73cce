"""The cluster's status as people see it: the page at /-/dashboard, read by a real browser
(headless Chromium: the app, its deployments and each replica's state, drawn by the page's
own script from /-/api/status; the token a cluster with one asks of it), `weir status
--watch` and `weir deploy --wait`'s progress and failure."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tests.e2e.conftest import ROOT, RunningCluster, start_cluster, wait_for

CHROMIUM = "/usr/bin/chromium"
TOKEN = "dashboard-test-token"
#: Set to regenerate docs/dashboard.png from this test (else the picture goes to tmp).
UPDATE_DOCS_ENV = "WEIR_UPDATE_DOCS"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    for running in start_cluster(tmp_path_factory, token=TOKEN):
        app = {"name": "echo", "import_path": "tests.e2e.apps.basic:Echo",
               "route_prefix": "/echo", "runtime_env": {"working_dir": str(ROOT)}}
        running.client.deploy({"applications": [app]}, partial=True)
        running.wait_status("echo", "RUNNING")
        yield running


def chromium(url: str, profile: Path, *extra: str) -> str:
    """Run headless Chromium on `url` until its scripts settle; its stdout."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               # Virtual time runs until the page's fetch has answered and it has drawn.
               "--virtual-time-budget=3000", *extra, url]
    done = subprocess.run(command, capture_output=True, timeout=60, check=True)
    return done.stdout.decode()


def test_the_api_wants_the_cluster_token(cluster: RunningCluster) -> None:
    assert cluster.get("/-/api/status").status_code == 401
    wrong = cluster.get("/-/api/status", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    doc = cluster.get("/-/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    [app] = doc["applications"]
    assert app["name"] == "echo" and app["status"] == "RUNNING"
    assert [d["name"] for d in app["deployments"]] == ["Echo"]
    assert {r["state"] for r in app["deployments"][0]["replicas"]} == {"RUNNING"}
    assert any(e["kind"] == "deploy" and e["app"] == "echo" for e in doc["events"])
    assert doc["config_history"][0]["applications"] == ["echo"]
    # The page itself holds no data: served to anyone; writes are refused.
    assert cluster.get("/-/dashboard").status_code == 200
    assert requests.post(cluster.url + "/-/api/status", timeout=5).status_code == 405


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no Chromium on this machine")
def test_the_page_draws_apps_deployments_and_replicas(cluster: RunningCluster,
                                                      tmp_path: Path) -> None:
    # Both replicas RUNNING in the status, so that the picture shows a settled app.
    wait_for(lambda: cluster.app_status("echo")["deployment_statuses"][0]
             ["replica_states"].get("RUNNING") == 2, 30, "two RUNNING replicas")
    picture = tmp_path / "dashboard.png"
    dom = chromium(f"{cluster.url}/-/dashboard#token={TOKEN}", tmp_path / "profile",
                   "--dump-dom", f"--screenshot={picture}", "--window-size=1280,900")
    assert 'data-app="echo"' in dom and 'data-deployment="Echo"' in dom
    assert dom.count('class="replica"') == 2, dom
    assert '<span class="status RUNNING">RUNNING</span>' in dom
    assert "deployed a new config" in dom  # the event log
    assert "Cannot read" not in dom and 'id="token-form" hidden' in dom
    assert picture.stat().st_size > 10_000
    if os.environ.get(UPDATE_DOCS_ENV):
        shutil.copy(picture, ROOT / "docs" / "dashboard.png")


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no Chromium on this machine")
def test_without_the_token_the_page_asks_for_it(cluster: RunningCluster,
                                                tmp_path: Path) -> None:
    dom = chromium(f"{cluster.url}/-/dashboard", tmp_path / "profile", "--dump-dom")
    assert 'id="token-form" hidden' not in dom and 'data-app="echo"' not in dom


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "weir.cli", *args]


def test_status_watch_redraws(cluster: RunningCluster) -> None:
    env = {**os.environ, "WEIR_TOKEN": TOKEN}
    proc = subprocess.Popen(_cli("status", "--watch", "--interval", "0.2", "--address",
                                 cluster.info.address), env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        drawn = ""
        deadline = time.monotonic() + 30
        while drawn.count("---") < 2 and time.monotonic() < deadline:
            drawn += proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        rest, errors = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, errors
    docs = [d for d in yaml.safe_load_all(drawn + rest) if d]
    assert len(docs) >= 2
    assert docs[0]["applications"]["echo"]["app_status"]["status"] == "RUNNING"


def test_deploy_wait_shows_progress_and_fails_with_the_reason(cluster: RunningCluster,
                                                              tmp_path: Path) -> None:
    # Last in the module: `weir deploy` replaces the whole goal.
    config = {"applications": [{"name": "broken", "route_prefix": "/broken",
                                "import_path": "tests.e2e.apps.basic:NoSuchApp",
                                "runtime_env": {"working_dir": str(ROOT)}}]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(_cli("deploy", str(path), "--wait", "--timeout", "60", "--address",
                               cluster.info.address, "--token", TOKEN),
                          cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "broken: DEPLOYING" in done.stderr  # the progress, printed as it changed
    assert "NoSuchApp" in done.stderr.splitlines()[-1]
