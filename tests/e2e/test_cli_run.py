"""`weir run` on the embedded cluster, and scripts using `serve.run` by value."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import requests

from tests.e2e.conftest import ROOT, wait_for
from weir.controller.launcher import pid_runs
from weir.etcd_server import free_port

WEIR_MARKERS = (b"weir.controller", b"weir.replica", b"weir.proxy", b"weir.build", b"etcd")


def weir_processes() -> set[int]:
    """PIDs of every Weir or etcd process on the machine."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if any(m in cmd for m in WEIR_MARKERS) and pid_runs(int(entry.name)):
                found.add(int(entry.name))
    return found


def cluster_dirs() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("weir-cluster-*")}


def test_weir_run_serves_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    before, dirs_before = weir_processes(), cluster_dirs()
    port = free_port()
    env = {**os.environ, "WEIR_HOME": str(tmp_path)}
    env.pop("WEIR_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "weir.cli", "run", "tests.e2e.apps.basic:echo", "--port",
         str(port), "--admin-port", "0"], cwd=ROOT, env=env, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        def answered() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(answered, 60, "weir run to serve")
        assert len(weir_processes() - before) >= 5  # etcd, controller, proxy, 2 replicas
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
        assert time.monotonic() - started < 10, "Ctrl-C stops everything within 10 s"
        assert proc.returncode == 0
        wait_for(lambda: not (weir_processes() - before), 5, "every process to exit")
        assert cluster_dirs() == dirs_before, "no temp dir left behind"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _, err = proc.communicate()
    assert b"RUNNING" in err


def test_weir_run_bad_import_path_exits_with_reason(tmp_path: Path) -> None:
    env = {**os.environ, "WEIR_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "weir.cli", "run", "no_such_module_anywhere:app", "--port",
         str(free_port()), "--admin-port", "0"], cwd=ROOT, env=env, capture_output=True,
        timeout=90)
    assert proc.returncode == 1
    assert b"no_such_module_anywhere" in proc.stderr
    assert b"Traceback" not in proc.stderr


SCRIPT = '''
import sys
from weir import serve

@serve.deployment(num_replicas=1)
class Adder:
    def __init__(self, base):
        self.base = base
    def add(self, x):
        return self.base + x

@serve.deployment
class Ingress:
    def __init__(self, adder):
        self.adder = adder
    async def __call__(self, request):
        x = int(request.query_params.get("x", "0"))
        return {"sum": await self.adder.add.remote(x)}
    def direct(self, x):
        return self.adder.add.remote(x).result()

serve.start(http_options={"port": int(sys.argv[1])})
handle = serve.run(Ingress.bind(Adder.bind(100)), name="script")
import requests
print("http", requests.get(f"http://127.0.0.1:{sys.argv[1]}/?x=5").json()["sum"])
print("handle", handle.direct.remote(7).result(timeout_s=30))
print("status", serve.status().applications["script"].status)
serve.shutdown()
print("done")
'''


def test_serve_run_from_a_script_ships_code_by_value(tmp_path: Path) -> None:
    before = weir_processes()
    script = tmp_path / "app_script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "WEIR_HOME": str(tmp_path), "WEIR_ADMIN_PORT": "0"}
    env.pop("WEIR_ADDRESS", None)
    out = subprocess.run([sys.executable, str(script), str(free_port())], cwd=tmp_path, env=env,
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    lines = out.stdout.decode().split("\n")
    assert "http 105" in lines and "handle 107" in lines and "status RUNNING" in lines
    assert "done" in lines
    wait_for(lambda: not (weir_processes() - before), 5, "every process to exit")
