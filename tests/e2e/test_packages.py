"""Code travels as packages: a replica runs from the node's package cache, not the path the
config named, so it still starts after that path is gone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import RunningCluster, wait_for
from weir.packages import pack
from weir.runtime_env import package_hash

APP_CODE = '''
import importlib
import os

import helpers
from weir import serve


@serve.deployment(num_replicas=1)
class Where:
    def __call__(self, request):
        # A decorated class travels by value, with its globals as the build saw them: ask
        # the replica's own import system where the module is.
        module = importlib.import_module("where_app")
        return {"cwd": os.getcwd(), "file": module.__file__, "helpers": helpers.__file__,
                "pid": os.getpid(), "greeting": helpers.GREETING}


app = Where.bind()
'''


def where(cluster: RunningCluster) -> dict[str, str]:
    response = cluster.get("/where")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_replicas_run_from_the_node_package_cache(cluster: RunningCluster,
                                                   tmp_path: Path) -> None:
    code, helpers = tmp_path / "code", tmp_path / "libs" / "helpers"
    code.mkdir()
    helpers.mkdir(parents=True)
    (code / "where_app.py").write_text(APP_CODE)
    (helpers / "__init__.py").write_text('GREETING = "from a package"\n')
    app = {"name": "where", "import_path": "where_app:app", "route_prefix": "/where",
           "runtime_env": {"working_dir": str(code), "py_modules": [str(helpers)]}}
    cluster.client.deploy({"applications": [app]}, partial=True)
    cluster.wait_status("where", "RUNNING")

    env = cluster.client.get_config("where")["runtime_env"]
    work_hash, module_hash = package_hash(env["working_dir"]), package_hash(env["py_modules"][0])
    assert work_hash and module_hash, env
    assert env["py_modules"][0].endswith("/helpers")
    # The embedded cluster's node agent shares its controller's cache (one a machine).
    node_cache = Path(cluster.info.temp_dir) / "packages"
    first = where(cluster)
    assert first["cwd"] == str(node_cache / work_hash)
    assert first["file"] == str(node_cache / work_hash / "where_app.py")
    assert first["helpers"] == str(node_cache / module_hash / "helpers" / "__init__.py")
    assert first["greeting"] == "from a package"

    # The named paths are gone, and so is the node's unpacked copy: a new replica still
    # starts, with the code the node fetches again from the controller (which serves the
    # zip it kept).
    shutil.rmtree(tmp_path / "libs")
    code.rename(tmp_path / "moved")
    shutil.rmtree(node_cache / work_hash)
    os.kill(int(first["pid"]), signal.SIGKILL)

    def replaced() -> dict[str, str] | None:
        response = cluster.get("/where")
        return response.json() if response.status_code == 200 and \
            response.json()["pid"] != first["pid"] else None

    second = wait_for(replaced, 30, "a new replica of where")
    assert {k: v for k, v in second.items() if k != "pid"} == \
        {k: v for k, v in first.items() if k != "pid"}
    assert (node_cache / work_hash / "where_app.py").read_text() == APP_CODE
    cluster.client.delete_apps(["where"])


def test_a_package_over_the_limit_is_refused_before_anything_changes(
        cluster: RunningCluster, tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "where_app.py").write_text(APP_CODE)
    (code / "weights.bin").write_bytes(os.urandom(300_000))
    config = tmp_path / "config.yaml"
    config.write_text("applications:\n- name: heavy\n  route_prefix: /heavy\n"
                      f"  import_path: where_app:app\n  runtime_env: {{working_dir: {code}}}\n")
    env = {**os.environ, "WEIR_TOKEN": cluster.info.token}
    out = subprocess.run([sys.executable, "-m", "weir.cli", "deploy", str(config),
                          "--address", cluster.info.address, "--max-package-mb", "0.1"],
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1, out
    assert "application 'heavy' runtime_env.working_dir: cannot package" in out.stderr
    assert "more than the limit of 102.4 KiB zipped" in out.stderr, out.stderr
    assert "heavy" not in cluster.client.get_status().get("applications", {})
    assert not (Path(cluster.info.temp_dir) / "packages" / pack(code)[0]).exists()
