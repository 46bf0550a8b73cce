"""`weir run` on the embedded cluster, and scripts using `serve.run` by value."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import requests

from tests.e2e.conftest import ROOT, wait_for
from weir.cli.admin_client import AdminClient
from weir.processes import find_pids, free_port, pid_runs


def processes_mentioning(*needles: str) -> set[int]:
    """PIDs of live processes with an argument that contains any of `needles`."""
    return set(find_pids(lambda args: any(n in arg for arg in args for n in needles)))


def weir_run(tmp_path: Path, *args: str, cwd: Path = ROOT) -> tuple[subprocess.Popen[bytes],
                                                                     int, Path]:
    """Start `weir run ARGS` on an embedded cluster: (the process, its HTTP port, its
    stderr's file)."""
    port = free_port()
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "weir.cli", "run", *args, "--port", str(port),
             "--admin-port", "0"], cwd=cwd, env=embedded_env(tmp_path), stderr=err,
            start_new_session=True)
    return proc, port, log


def embedded_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a `weir` command on the embedded cluster kept under tmp_path."""
    env = {**os.environ, "WEIR_HOME": str(tmp_path)}
    env.pop("WEIR_ADDRESS", None)
    return env


def resident_mb(pid: int) -> float:
    """A process's resident memory in MB (VmRSS)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def http_answer(port: int) -> requests.Response | None:
    """GET / of the embedded cluster's proxy (None while it does not answer)."""
    try:
        return requests.get(f"http://127.0.0.1:{port}/", timeout=2)
    except requests.RequestException:
        return None


def test_weir_run_serves_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    proc, port, log = weir_run(tmp_path, "tests.e2e.apps.basic:echo")
    try:
        wait_for(lambda: (r := http_answer(port)) is not None and r.status_code == 200, 60,
                 "weir run to serve")
        match = re.search(r"etcd at (\S+), logs in (\S+)/logs", log.read_text())
        assert match, log.read_text()
        etcd, temp_dir = match.groups()
        mine = processes_mentioning(etcd, temp_dir)
        assert len(mine) >= 5, mine  # etcd, controller, proxy, 2 replicas
        # The working dir's package was staged in the cache the controller and the node
        # agent share while the cluster started: nothing went over the wire.
        logs = Path(temp_dir) / "logs"
        assert "package received" not in (logs / "controller-0.log").read_text()
        assert "package fetched" not in (logs / "node-agent.log").read_text()
        assert len(list((Path(temp_dir) / "packages").glob("*.zip"))) == 1
        # Once the app runs, `weir run` waits as a lean process (weir.cli.run_keeper).
        wait_for(lambda: "run_keeper.py" in Path(f"/proc/{proc.pid}/cmdline").read_text(),
                 20, "weir run to hand its wait over")
        assert resident_mb(proc.pid) < 20, "the wait holds a few MB, not the CLI's ~47"
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
        assert time.monotonic() - started < 10, "Ctrl-C stops everything within 10 s"
        assert proc.returncode == 0
        wait_for(lambda: not processes_mentioning(etcd, temp_dir), 5, "every process to exit")
        assert not any(pid_runs(p) for p in mine)
        assert not os.path.exists(temp_dir), "no temp dir left behind"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "RUNNING" in log.read_text()


RELOADED_APP = """
from weir import serve


@serve.deployment
def answer():
    return "{text}"


app = answer.bind()
"""


def test_weir_run_reload_redeploys_when_the_code_changes(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    module = code / "reloaded_app.py"
    module.write_text(RELOADED_APP.format(text="before"))
    proc, port, log = weir_run(tmp_path, "reloaded_app:app", "--app-dir", str(code),
                               "--reload", cwd=tmp_path)
    try:
        def answer() -> str:
            reply = http_answer(port)
            return reply.text if reply is not None else ""

        wait_for(lambda: answer() == "before", 60, "weir run to serve the first version")
        wait_for(lambda: "for changes" in log.read_text(), 10, "the watcher to start")
        module.write_text(RELOADED_APP.format(text="after"))
        edited = time.monotonic()
        wait_for(lambda: answer() == "after", 60, "the edited code to answer")
        print(f"\n[reload] new code answered {time.monotonic() - edited:.2f} s after the edit")
        assert "changed; redeploying" in log.read_text()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
        assert proc.returncode == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


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

def make_ingress():
    # Defined inside a function: no import path leads to it (its qualname has <locals>).
    @serve.deployment
    class Ingress:
        def __init__(self, adder):
            self.adder = adder
        async def __call__(self, request):
            x = int(request.query_params.get("x", "0"))
            return {"sum": await self.adder.add.remote(x)}
        def direct(self, x):
            return self.adder.add.remote(x).result()
    return Ingress

serve.start(http_options={"port": int(sys.argv[1])})
handle = serve.run(make_ingress().bind(Adder.bind(100)), name="script")
import requests
print("http", requests.get(f"http://127.0.0.1:{sys.argv[1]}/?x=5").json()["sum"])
print("handle", handle.direct.remote(7).result(timeout_s=30))
app_status = serve.status().applications["script"]
print("status", app_status.status)
from weir.serve.schema import ApplicationStatusOverview, DeploymentStatusOverview
ingress = app_status.deployments["Ingress"]
print("objects", isinstance(app_status, ApplicationStatusOverview),
      isinstance(ingress, DeploymentStatusOverview), ingress.status, ingress.status_trigger,
      ingress.replica_states, app_status.last_deployed_time_s > 0)
from weir import context
print("etcd", context.cluster().etcd_endpoints)
serve.shutdown()
print("done")
'''


def test_serve_run_from_a_script_ships_code_by_value(tmp_path: Path) -> None:
    script = tmp_path / "app_script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "WEIR_HOME": str(tmp_path), "WEIR_ADMIN_PORT": "0"}
    env.pop("WEIR_ADDRESS", None)
    out = subprocess.run([sys.executable, str(script), str(free_port())], cwd=tmp_path, env=env,
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    lines = out.stdout.decode().split("\n")
    assert "http 105" in lines and "handle 107" in lines and "status RUNNING" in lines
    assert "objects True True HEALTHY CONFIG_UPDATE_COMPLETED {'RUNNING': 1} True" in lines, lines
    assert "done" in lines
    etcd = next(line.split()[1] for line in lines if line.startswith("etcd "))
    wait_for(lambda: not processes_mentioning(etcd), 5, "the script's cluster to be gone")


BUILDER_APP = '''
from weir import serve


@serve.deployment
class Greeter:
    def __init__(self, greeting):
        self.greeting = greeting

    def __call__(self, request):
        return self.greeting


def app(args):
    return Greeter.bind(args["greeting"])
'''


def test_weir_run_passes_builder_args_and_serve_shutdown_stops_it_all(tmp_path: Path) -> None:
    (tmp_path / "greeter_builder.py").write_text(BUILDER_APP)
    proc, port, log = weir_run(tmp_path, "greeter_builder:app", "greeting=hej",
                               "--app-dir", str(tmp_path), "--proxy-workers", "2")
    try:
        wait_for(lambda: (r := http_answer(port)) is not None and r.text == "hej", 60,
                 "the builder's argument to reach the app")
        match = re.search(r"admin at (\S+), etcd at (\S+), logs in (\S+)/logs",
                          log.read_text())
        assert match, log.read_text()
        admin, etcd, temp_dir = match.groups()
        # --proxy-workers 2: both workers of the embedded proxy are up and listed.
        client = AdminClient(admin)
        wait_for(lambda: len(client.get_status()["proxies"]) == 2, 20,
                 "weir status to list both proxy workers")
        shutdown = subprocess.run(
            [sys.executable, "-m", "weir.cli", "shutdown", "-y", "-a", admin], cwd=ROOT,
            env=embedded_env(tmp_path), capture_output=True, text=True, timeout=30)
        assert shutdown.returncode == 0, shutdown.stderr
        proc.wait(timeout=20)
        assert proc.returncode == 0
        wait_for(lambda: not processes_mentioning(etcd, temp_dir), 10,
                 "etcd, proxy and node agent of `weir run` to exit too")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "The cluster was shut down." in log.read_text()
