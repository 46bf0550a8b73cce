"""The `weir` command's questions and warnings, run as real processes.

Each command points at a port nobody listens on: what it printed before it tried the
cluster (a question, a warning) is the behaviour under test, and "cannot reach the Weir
controller" proves it went on to contact the cluster.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.terminal import ROOT, weir_at_terminal
from weir.etcd.server import free_port

UNREACHABLE = "cannot reach the Weir controller"


def weir(*args: str) -> subprocess.CompletedProcess[str]:
    """`weir ARGS` with stdin a pipe (a script, nobody to answer)."""
    return subprocess.run([sys.executable, "-m", "weir.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, stdin=subprocess.DEVNULL)


def test_delete_asks_and_no_deletes_nothing() -> None:
    proc = weir_at_terminal("delete", "app1", "app2", "-a", f"127.0.0.1:{free_port()}",
                            answer="n\n")
    assert proc.returncode == 1
    assert "This deletes app1, app2 and stops their replicas. Continue?" in proc.stdout
    assert "Aborted" in proc.stderr
    assert UNREACHABLE not in proc.stderr, "it must not contact the cluster after a no"


def test_delete_asks_and_yes_goes_on() -> None:
    proc = weir_at_terminal("delete", "app1", "-a", f"127.0.0.1:{free_port()}", answer="y\n")
    assert "Continue?" in proc.stdout
    assert UNREACHABLE in proc.stderr


def test_delete_with_yes_does_not_ask() -> None:
    proc = weir_at_terminal("delete", "app1", "--yes", "-a", f"127.0.0.1:{free_port()}",
                            answer="n\n")
    assert "Continue?" not in proc.stdout
    assert UNREACHABLE in proc.stderr


def test_delete_from_a_script_does_not_wait_for_an_answer() -> None:
    proc = weir("delete", "app1", "-a", f"127.0.0.1:{free_port()}")
    assert "Continue?" not in proc.stdout
    assert UNREACHABLE in proc.stderr


def test_deploy_warns_by_name_for_fields_weir_ignores(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"applications": [{
        "import_path": "mod:app", "runtime_env": {"pip": ["numpy"]},
        "deployments": [{"name": "A", "placement_group_strategy": "PACK"},
                        {"name": "B", "placement_group_strategy": "SPREAD",
                         "max_ongoing_requests": 3}]}]}))
    proc = weir("deploy", str(config), "-a", f"127.0.0.1:{free_port()}")
    assert proc.stderr.count("Weir ignores") == 2, proc.stderr
    assert ("Weir ignores the deployment option 'placement_group_strategy' (at "
            "applications[0].deployments[0].placement_group_strategy, "
            "applications[0].deployments[1].placement_group_strategy)") in proc.stderr
    assert "Weir ignores the application option 'runtime_env.pip'" in proc.stderr
    assert "max_ongoing_requests" not in proc.stderr
    assert UNREACHABLE in proc.stderr, "a warning never stops the deploy"


def test_a_built_config_deploys_without_warnings(tmp_path: Path) -> None:
    # `weir build` writes every default out; defaults ask for nothing, so nothing warns.
    config = tmp_path / "config.yaml"
    built = weir("build", "tests.e2e.apps.configurable:app", "-o", str(config))
    assert built.returncode == 0, built.stderr
    proc = weir("deploy", str(config), "-a", f"127.0.0.1:{free_port()}")
    assert "Weir ignores" not in proc.stderr
    assert UNREACHABLE in proc.stderr


def test_a_built_config_of_an_autoscaled_app_writes_its_autoscaling_and_deploys(
        tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    built = weir("build", "tests.e2e.apps.autoscaled:app", "-o", str(config))
    assert built.returncode == 0, built.stderr
    [entry] = yaml.safe_load(config.read_text())["applications"][0]["deployments"]
    assert "num_replicas" not in entry
    assert entry["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3,
                                           "target_ongoing_requests": 1}
    proc = weir("deploy", str(config), "-a", f"127.0.0.1:{free_port()}")
    assert UNREACHABLE in proc.stderr, proc.stderr


def test_weir_start_refuses_tls_files_that_cannot_be_used(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from weir.cli.commands import main

    monkeypatch.setenv("WEIR_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["start", "--ssl-certfile", str(tmp_path / "no.pem"),
                                       "--ssl-keyfile", str(tmp_path / "no-key.pem")])
    assert result.exit_code == 1
    assert "ssl_certfile: no file at" in result.output and "no.pem" in result.output
