"""A Weir local cluster for the bench, driven only through the `weir` CLI, as a user would.

`weir start` returns once the cluster is up and leaves its processes (etcd, controller,
proxy, later replicas) detached; `weir shutdown -y` stops them. The bench must never leave
one behind, even when the CLI itself fails half-way, so each cluster gets a private
WEIR_HOME temp dir: every process the CLI starts inherits it in its environment, and a
final sweep stops by PID any process still carrying it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

import yaml

from bench.processes import REPO_ROOT, ProcessFailed, pids_with_env, wait_http_ok
from weir.processes import signal_process, spawn, terminate, wait_exit

CLI_INTERRUPT_GRACE_S = 15.0


class CliFailed(RuntimeError):
    """A `weir` command exited non-zero; the message carries its command line and output."""


def weir_command() -> list[str]:
    """How to run the CLI: `weir` beside this interpreter, on PATH, or `python -m weir.cli`."""
    beside = Path(sys.executable).with_name("weir")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("weir")
    return [found] if found else [sys.executable, "-m", "weir.cli"]


def app_config(import_path: str, working_dir: Path) -> dict[str, object]:
    """The `weir deploy` config: one application at route prefix /, code by import path."""
    return {"applications": [{
        "name": "default",
        "route_prefix": "/",
        "import_path": import_path,
        "runtime_env": {"working_dir": str(working_dir)},
    }]}


class WeirCluster:
    """One `weir start` cluster in the private WEIR_HOME `home`; a context manager."""

    def __init__(self, home: Path, http_port: int, admin_port: int,
                 http_server: str = "auto") -> None:
        self.home = home
        self.http_port = http_port
        self.admin_port = admin_port
        self.http_server = http_server
        # TMPDIR inside `home`: the cluster's temp dir (its logs) lands beside the bench's
        # own logs, and goes with them, even if `weir start` fails before recording it.
        self.env = {**os.environ, "WEIR_HOME": str(home), "TMPDIR": str(home / "tmp")}
        self._calls = 0
        self._started = False

    @property
    def url(self) -> str:
        """The proxy's root URL."""
        return f"http://127.0.0.1:{self.http_port}/"

    @property
    def admin_address(self) -> str:
        """The controller's admin address."""
        return f"127.0.0.1:{self.admin_port}"

    def start(self, timeout: float = 60.0) -> None:
        """`weir start` on loopback with the chosen ports and HTTP server.

        The server is always named: the CLI's default is `auto` (uvicorn when installed),
        so leaving the flag out for `hypercorn` would measure uvicorn under that name.
        """
        (self.home / "tmp").mkdir(parents=True, exist_ok=True)
        argv = ["start", "--http-host", "127.0.0.1", "--http-port", str(self.http_port),
                "--admin-port", str(self.admin_port), "--http-server", self.http_server]
        self._started = True
        self.cli(argv, timeout)

    def deploy(self, import_path: str, timeout: float = 60.0) -> None:
        """Write the config for `import_path` and `weir deploy` it."""
        self.deploy_config(app_config(import_path, REPO_ROOT), timeout)

    def deploy_config(self, config: dict[str, object], timeout: float = 60.0) -> None:
        """Write `config` to a file and `weir deploy` it."""
        path = self.home / "bench-config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.cli(["deploy", str(path), "-a", self.admin_address], timeout)

    def wait_serving(self, timeout: float = 60.0) -> None:
        """Poll the application's URL until it answers 200."""
        wait_http_ok(self.url, timeout)

    def shutdown(self, timeout: float = 30.0) -> None:
        """`weir shutdown -y`, then stop by PID whatever still carries this WEIR_HOME.

        The address is always given: without it the CLI would fall back to the default
        admin port, which may be another cluster's on a shared machine.
        """
        if not self._started:
            return
        self._started = False
        error: Exception | None = None
        try:
            self.cli(["shutdown", "-y", "-a", self.admin_address], timeout)
        except (CliFailed, ProcessFailed) as exc:
            error = exc
        leftovers = pids_with_env("WEIR_HOME", str(self.home))
        for pid in leftovers:
            terminate(pid, 3.0)
        if leftovers:
            lines = str(error).strip().splitlines() if error else []
            reason = f"weir shutdown failed: {lines[-1]}" if lines else "weir shutdown left them"
            print(f"  stopped {len(leftovers)} leftover Weir process(es) by PID ({reason})",
                  file=sys.stderr)

    def cli(self, argv: list[str], timeout: float) -> str:
        """Run one `weir` command; return its output, raise CliFailed on a non-zero exit.

        Output goes to a file, not a pipe: the detached processes `weir start` leaves behind
        must not hold our end open. On Ctrl-C or timeout the command gets SIGINT first, so
        that a half-done `weir start` can stop what it started.
        """
        self._calls += 1
        log = self.home / f"cli-{self._calls}-{argv[0]}.log"
        command = [*weir_command(), *argv]
        proc = spawn(command, log_path=log, env=self.env, cwd=REPO_ROOT, detached=True)
        try:
            code = proc.wait(timeout=timeout)
        except BaseException as exc:
            _interrupt(proc)
            if isinstance(exc, subprocess.TimeoutExpired):
                raise ProcessFailed(f"`weir {' '.join(argv)}` did not finish within "
                                    f"{timeout:.0f} s") from exc
            raise
        output = log.read_text(errors="replace").strip()
        if code != 0:
            raise CliFailed(f"`weir {' '.join(argv)}` exited with code {code}:\n{output}")
        return output

    def __enter__(self) -> WeirCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()


def _interrupt(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT `proc` and give it a grace period to clean up, then stop it by PID."""
    signal_process(proc, signal.SIGINT)
    if not wait_exit(proc, CLI_INTERRUPT_GRACE_S):
        terminate(proc, 3.0)
