"""A constructor that raises, fixed in the working_dir, rolled out by the same deploy.

Ray rolls such a fix out because a working_dir's content hash is part of the app's
version; the crash loop's backoff and message belong to the broken version and must not
hold up the fixed one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli_workflow import Cli, app_status
from weir.processes import free_port, pid_runs

#: How long the broken version crash-loops before the fix (its backoff grows to 16 s).
CRASH_LOOP_S = 12.0  # by then the backoff is 8 s: an inherited one would miss the 5 s bound

APP_CODE = '''
from weir import serve

@serve.deployment(num_replicas=1)
class Fragile:
    def __init__(self):
        {body}

    def __call__(self, request):
        return {{"fixed": True}}

app = Fragile.bind()
'''


@pytest.fixture
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, str]]:
    home = tmp_path_factory.mktemp("weir-home")
    run = Cli(home)
    port = free_port()
    run("start", "--http-port", str(port), "--admin-port", "0")
    pids = [int(p) for p in json.loads((home / "cluster.json").read_text())["pids"].values()]
    try:
        yield run, f"http://127.0.0.1:{port}"
    finally:
        run("shutdown", "-y")
        assert not [pid for pid in pids if pid_runs(pid)]


def test_fixed_code_under_the_same_config_rolls_out(cli: tuple[Cli, str],
                                                     tmp_path: Path) -> None:
    run, url = cli
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    module = code_dir / "fragile_app.py"
    module.write_text(APP_CODE.format(body='raise ValueError("broken constructor")'))
    config = tmp_path / "config.yaml"
    config.write_text(
        "applications:\n"
        "- name: fragile\n"
        "  route_prefix: /fragile\n"
        "  import_path: fragile_app:app\n"
        f"  runtime_env: {{working_dir: {code_dir}}}\n")
    run("deploy", str(config))
    deployed = time.monotonic()
    failed = wait_for(lambda: (s := app_status(run, "fragile")).get("app_status", {}).get(
        "status") == "DEPLOY_FAILED" and s, 60, "fragile to be DEPLOY_FAILED")
    assert "ValueError: broken constructor" in failed["app_status"]["message"]
    # Let it crash-loop: every status read on the way also checks that it stays failed.
    wait_for(lambda: app_status(run, "fragile")["app_status"]["status"] == "DEPLOY_FAILED"
             and time.monotonic() - deployed >= CRASH_LOOP_S, CRASH_LOOP_S + 30,
             "a crash loop of CRASH_LOOP_S")

    module.write_text(APP_CODE.format(body="pass"))
    os.utime(module)
    out = run("deploy", str(config)).stdout
    assert "1 app(s) changed" in out, out
    redeployed = time.monotonic()
    status = wait_for(lambda: (s := app_status(run, "fragile")).get("app_status", {}).get(
        "status") == "RUNNING" and s, 30, "fragile to be RUNNING")
    took = time.monotonic() - redeployed
    print(f"\n[redeploy] RUNNING {took:.2f} s after the fixed deploy")
    assert took <= 5.0, f"the fix took {took:.2f} s to run"
    assert status["app_status"]["message"] == ""
    assert status["deployment_statuses"][0]["status"] == "HEALTHY"
    assert status["deployment_statuses"][0]["message"] == ""
    assert requests.get(url + "/fragile", timeout=10).json() == {"fixed": True}
