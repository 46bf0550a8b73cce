"""Seed 001's production workflow with the CLI: start, build, deploy, status, config,
lightweight updates, bad configs, history and rollback, shutdown."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.e2e.conftest import ROOT, wait_for
from tests.terminal import weir_at_terminal
from weir.etcd.server import free_port
from weir.processes import pid_runs


class Cli:
    """Runs `weir ...` with a private WEIR_HOME."""

    def __init__(self, home: Path) -> None:
        self.env = {**os.environ, "WEIR_HOME": str(home)}
        self.env.pop("WEIR_ADDRESS", None)

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "weir.cli", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=120)
        if ok:
            assert proc.returncode == 0, f"weir {' '.join(args)}: {proc.stderr}"
        return proc

    def yaml(self, *args: str) -> Any:
        return yaml.safe_load(self(*args).stdout)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, str]]:
    home = tmp_path_factory.mktemp("weir-home")
    run = Cli(home)
    port = free_port()
    out = run("start", "--http-port", str(port), "--admin-port", "0", "--controllers", "2")
    assert "admin address" in out.stdout
    state = yaml.safe_load((home / "cluster.json").read_text())
    try:
        yield run, f"http://127.0.0.1:{port}"
    finally:
        run("shutdown", "-y")
        left = [pid for pid in state["pids"].values() if pid_runs(pid)]
        assert not left, f"processes left after weir shutdown: {left}"
        assert not os.path.exists(state["temp_dir"])


def app_status(cli: Cli, name: str = "default") -> dict[str, Any]:
    return cli.yaml("status").get("applications", {}).get(name, {})  # type: ignore[no-any-return]


def wait_app(cli: Cli, want: str, name: str = "default") -> dict[str, Any]:
    return wait_for(lambda: (s := app_status(cli, name)).get("app_status", {}).get(
        "status") == want and s, 60, f"{name} to be {want}")  # type: ignore[no-any-return]


def test_build_then_deploy_unchanged(cli: tuple[Cli, str], tmp_path: Path) -> None:
    run, url = cli
    config = tmp_path / "config.yaml"
    run("build", "tests.e2e.apps.configurable:app", "-o", str(config))
    doc = yaml.safe_load(config.read_text())
    dep = doc["applications"][0]["deployments"][0]
    assert dep["name"] == "Greeter" and dep["num_replicas"] == 2
    assert dep["user_config"] == {"greeting": "hello"} and dep["max_ongoing_requests"] == 5
    run("deploy", str(config))
    status = wait_app(run, "RUNNING")
    assert status["deployment_statuses"][0] == {
        "name": "Greeter", "status": "HEALTHY", "status_trigger": "CONFIG_UPDATE_COMPLETED",
        "message": "", "replica_states": {"RUNNING": 2}}
    assert requests.get(url + "/", timeout=10).json()["text"] == "hello!"


def test_status_shapes(cli: tuple[Cli, str]) -> None:
    run, _ = cli
    doc = run.yaml("status")
    roles = sorted(c["role"] for c in doc["controllers"])
    assert roles == ["leader", "standby"]
    assert len(doc["proxies"]) == 1
    one = run.yaml("status", "--name", "default")
    assert set(one) == {"app_status", "deployment_statuses"}
    assert set(one["app_status"]) == {"status", "message", "deployment_timestamp"}
    missing = run.yaml("status", "--name", "nope")
    assert missing["app_status"]["status"] == "NOT_STARTED"


def test_config_prints_the_goal(cli: tuple[Cli, str]) -> None:
    run, _ = cli
    doc = run.yaml("config")
    assert doc["applications"][0]["import_path"] == "tests.e2e.apps.configurable:app"
    assert run.yaml("config", "--name", "default")["deployments"][0]["name"] == "Greeter"


@pytest.mark.parametrize("override, field", [
    ({"num_replicas": -1}, "applications[0].deployments[0].num_replicas"),
    ({"nmu_replicas": 3}, "applications[0].deployments[0].nmu_replicas"),
    ({"max_ongoing_requests": "many"}, "applications[0].deployments[0].max_ongoing_requests"),
])
def test_bad_config_is_rejected_naming_the_field(cli: tuple[Cli, str], tmp_path: Path,
                                                  override: dict[str, Any], field: str) -> None:
    run, url = cli
    before = run.yaml("config")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"applications": [{
        "name": "default", "import_path": "tests.e2e.apps.configurable:app",
        "deployments": [{"name": "Greeter", **override}]}]}))
    proc = run("deploy", str(bad), ok=False)
    assert proc.returncode == 1
    assert field in proc.stderr and "Traceback" not in proc.stderr
    assert run.yaml("config") == before, "a rejected config changes nothing"
    assert requests.get(url + "/", timeout=10).status_code == 200


def test_unimportable_app_fails_alone(cli: tuple[Cli, str], tmp_path: Path) -> None:
    run, _ = cli
    config = yaml.safe_load(run("config").stdout)
    config["applications"].append({"name": "ghost", "route_prefix": "/ghost",
                                   "import_path": "no_such_pkg.models:app"})
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(config))
    run("deploy", str(path))
    ghost = wait_app(run, "DEPLOY_FAILED", "ghost")
    assert "no_such_pkg" in ghost["app_status"]["message"]
    assert app_status(run)["app_status"]["status"] == "RUNNING"


def test_dry_run_history_and_rollback(cli: tuple[Cli, str], tmp_path: Path) -> None:
    run, url = cli
    config = yaml.safe_load(run("config").stdout)
    config["applications"] = [a for a in config["applications"] if a["name"] == "default"]
    # Edit the file as a user would: change only user_config.
    config["applications"][0]["deployments"][0]["user_config"] = {"greeting": "hi"}
    path = tmp_path / "light.yaml"
    path.write_text(yaml.safe_dump(config))
    diff = run.yaml("deploy", "--dry-run", str(path))
    assert "ghost" in diff["removed"]
    assert diff["changed"]["default"]["update"] == "lightweight"
    assert run.yaml("config")["applications"][-1]["name"] == "ghost", "dry run changes nothing"
    run("deploy", str(path))
    wait_for(lambda: requests.get(url + "/", timeout=10).json()["text"] == "hi!", 20,
             "the lightweight update")
    history = run("config", "--history").stdout.strip().splitlines()
    assert len(history) >= 3
    run("rollback")
    wait_for(lambda: requests.get(url + "/", timeout=10).json()["text"] == "hello!", 20,
             "the rollback")
    wait_app(run, "DEPLOY_FAILED", "ghost")


def test_delete_asks_first_and_ray_options_weir_ignores_deploy(cli: tuple[Cli, str],
                                                                 tmp_path: Path) -> None:
    run, url = cli
    config = yaml.safe_load(run("config").stdout)
    config["applications"].append({
        "name": "doomed", "route_prefix": "/doomed",
        "import_path": "tests.e2e.apps.configurable:app",
        "deployments": [{"name": "Greeter", "num_replicas": 1,
                         "placement_group_bundles": [{"CPU": 1}],
                         "placement_group_strategy": "STRICT_PACK"}]})
    path = tmp_path / "doomed.yaml"
    path.write_text(yaml.safe_dump(config))
    deployed = run("deploy", str(path))
    assert "Weir ignores the deployment option 'placement_group_bundles'" in deployed.stderr
    assert "Weir ignores the deployment option 'placement_group_strategy'" in deployed.stderr
    wait_app(run, "RUNNING", "doomed")
    assert requests.get(url + "/doomed", timeout=10).json()["text"] == "hello!"
    refused = weir_at_terminal("delete", "doomed", answer="n\n", env=run.env)
    assert refused.returncode == 1 and "Continue?" in refused.stdout
    assert app_status(run, "doomed")["app_status"]["status"] == "RUNNING"
    confirmed = weir_at_terminal("delete", "doomed", answer="y\n", env=run.env)
    assert confirmed.returncode == 0, confirmed.stderr
    wait_for(lambda: not app_status(run, "doomed"), 30, "doomed to be deleted")
    assert app_status(run)["app_status"]["status"] == "RUNNING", "others keep running"


def test_unreachable_address_is_one_line(cli: tuple[Cli, str]) -> None:
    run, _ = cli
    proc = run("status", "-a", f"127.0.0.1:{free_port()}", ok=False)
    assert proc.returncode == 1
    assert "cannot reach the Weir controller" in proc.stderr
    assert "Traceback" not in proc.stderr
