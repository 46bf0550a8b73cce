"""Ray Serve beside Weir in the same bench run, from a side venv that has `ray[serve]`.

Weir's venv never imports Ray: the benches run Ray's own `serve` CLI from the side venv
(bench/README.md says how to make it) on `bench.ray_noop_app:app`, with Ray's defaults
except the HTTP address (loopback, a free port). `serve run` starts a local Ray cluster
(gcs, raylet, dashboard, log monitor, workers...) in its own session. Every process it
starts inherits a marker in its environment, unique to this run, so all of them can be
found for their memory and stopped by PID: SIGINT to `serve run` first (it shuts Serve and
its Ray instance down), then SIGTERM and SIGKILL to whatever still carries the marker.
`ray stop --force` is not used: it stops every Ray process of the user on the machine,
by name, other people's runs included.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import yaml

from bench.processes import REPO_ROOT, ProcessGroup, pids_with_env, wait_http_ok
from weir.processes import signal_process, terminate, wait_exit

#: Where the bench looks for the side venv's interpreter when --ray-python is not given.
RAY_PYTHON_ENV = "WEIR_BENCH_RAY_PYTHON"
RAY_APP_IMPORT_PATH = "bench.ray_noop_app:app"
#: Set in `serve run`'s environment; every Ray process it starts inherits it.
MARK_ENV = "WEIR_BENCH_RAY_RUN"
SHUTDOWN_GRACE_S = 30.0
HOW_TO = "bench/README.md, 'Ray Serve in the same run', says how to make the side venv"


class RayUnavailable(RuntimeError):
    """Ray Serve cannot be run: no side venv named, or it has no `ray[serve]`."""


@dataclass(frozen=True)
class RayPython:
    """The side venv's interpreter and the Ray version it imports."""

    path: str
    version: str


def choose_ray_python(flag: str | None, environ: Mapping[str, str]) -> str:
    """The interpreter to run Ray Serve with: `--ray-python`, else $WEIR_BENCH_RAY_PYTHON.

    Raises RayUnavailable, naming both and where the setup is described, if neither is
    set. Pure.
    """
    chosen = flag or environ.get(RAY_PYTHON_ENV, "").strip()
    if not chosen:
        raise RayUnavailable(f"no --ray-python given and {RAY_PYTHON_ENV} is not set ({HOW_TO})")
    return chosen


def probe_ray_python(path: str, timeout: float = 60.0) -> RayPython:
    """Check that `path` runs and imports `ray.serve`; raises RayUnavailable saying why."""
    if not Path(path).exists():
        raise RayUnavailable(f"--ray-python {path}: no such file ({HOW_TO})")
    probe = "import ray, ray.serve; print(ray.__version__)"
    try:
        done = subprocess.run([path, "-c", probe], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RayUnavailable(f"--ray-python {path} could not run: {exc}") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RayUnavailable(f"--ray-python {path} cannot import ray.serve: {last} ({HOW_TO})")
    return RayPython(path, done.stdout.strip())


def serve_config(port: int) -> dict[str, object]:
    """The `serve run` config: the no-op app at /, HTTP on 127.0.0.1:`port`. Pure."""
    return {
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{"name": "default", "route_prefix": "/",
                          "import_path": RAY_APP_IMPORT_PATH}],
    }


def serve_command(ray_python: str, config_path: Path) -> list[str]:
    """`serve run CONFIG` from the side venv: its `serve` script if there, else the module.

    `--address local` starts a Ray instance of its own: Ray's default would attach to any
    Ray cluster already running on the machine.
    """
    script = Path(ray_python).with_name("serve")
    serve = [ray_python, str(script)] if script.exists() else [ray_python, "-m",
                                                               "ray.serve.scripts"]
    return [*serve, "run", "--address", "local", str(config_path)]


class RayServe:
    """One `serve run` of the no-op app and its local Ray cluster; a context manager.

    `start` launches it and polls its URL until it answers 200 (raises ProcessFailed at the
    deadline or if `serve run` exits); `pids` lists every process of this run; leaving the
    context stops them all by PID.
    """

    def __init__(self, ray_python: str, work_dir: Path, port: int) -> None:
        self.ray_python = ray_python
        self.work_dir = work_dir
        self.port = port
        self.marker = f"{work_dir}:{secrets.token_hex(4)}"
        self._group = ProcessGroup(work_dir)
        self._serve: subprocess.Popen[bytes] | None = None
        self._ray_tmp: str | None = None

    @property
    def url(self) -> str:
        """The Serve proxy's root URL."""
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float) -> None:
        """`serve run` the no-op app and wait for its first 200."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "serve-config.yaml"
        config.write_text(yaml.safe_dump(serve_config(self.port), sort_keys=False))
        # PYTHONPATH: the replica workers import bench.ray_noop_app from the repository, as
        # Weir's replicas import bench.noop_app from their working_dir.
        # A short private RAY_TMPDIR: Ray's session files (and unix sockets, whose paths
        # must stay under ~107 bytes) are this run's alone and go with it.
        self._ray_tmp = tempfile.mkdtemp(prefix="wr-", dir="/tmp")
        env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
        env.update({MARK_ENV: self.marker, "RAY_TMPDIR": self._ray_tmp,
                    "PYTHONPATH": os.pathsep.join(
                        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))})
        self._serve = self._group.spawn("serve-run", serve_command(self.ray_python, config),
                                        env=env)
        wait_http_ok(self.url, timeout, check=self._group)

    def pids(self) -> list[int]:
        """Every live process of this run: `serve run` and all that Ray started for it."""
        return pids_with_env(MARK_ENV, self.marker)

    def stop(self) -> None:
        """SIGINT to `serve run`, a grace period, then every leftover by PID."""
        if self._serve is not None:
            signal_process(self._serve, signal.SIGINT)  # serve run's own clean shutdown
            if not wait_exit(self._serve, SHUTDOWN_GRACE_S):
                print("  serve run did not stop on SIGINT; stopping it by PID", file=sys.stderr)
            self._serve = None
        self._group.stop_all()
        leftovers = {pid: _process_name(pid) for pid in self.pids()}
        for pid in leftovers:
            terminate(pid, 5.0)
        if leftovers:
            print(f"  stopped {len(leftovers)} leftover Ray process(es) by PID: "
                  f"{', '.join(sorted(leftovers.values()))}", file=sys.stderr)
        if self._ray_tmp is not None:
            shutil.rmtree(self._ray_tmp, ignore_errors=True)
            self._ray_tmp = None

    def __enter__(self) -> RayServe:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _process_name(pid: int) -> str:
    """The kernel's short name of `pid` (`raylet`, `ray::IDLE`), or `?` if it has gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """--ray-python and its deadline, for the benches that run Ray Serve beside Weir."""
    parser.add_argument("--ray-python", default=None,
                        help="Python of a side venv with ray[serve] (bench/README.md); "
                             "default $WEIR_BENCH_RAY_PYTHON; without either, Ray Serve is "
                             "skipped.")
    parser.add_argument("--ray-ready-timeout", type=float, default=180.0,
                        help="Deadline for Ray Serve to start and answer 200.")


def find_ray(flag: str | None) -> tuple[str | None, str]:
    """The side venv's Python and its Ray version, or (None, why not); says which on stderr."""
    try:
        ray = probe_ray_python(choose_ray_python(flag, os.environ))
    except RayUnavailable as exc:
        print(f"ray-serve: skipped: {exc}", file=sys.stderr, flush=True)
        return None, str(exc)
    print(f"ray-serve: ray {ray.version} from {ray.path}", file=sys.stderr, flush=True)
    return ray.path, ray.version
