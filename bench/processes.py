"""The processes a bench starts, and how it knows they are ready and makes sure they stop.

A benchmark that leaves a server behind poisons the next run (a port taken, a core busy),
so every child is started in its own session (a Ctrl-C in the terminal reaches only the
bench, which then stops its children in order) and stopped by PID: SIGTERM, a deadline,
then SIGKILL. Readiness is always a poll with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

# Weir's own process helpers serve the benches too (re-exported for them).
from weir.processes import find_pids, spawn, terminate
from weir.processes import free_port as free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
POLL_INTERVAL_S = 0.05


class ProcessFailed(RuntimeError):
    """A child process exited early or did not become ready in time."""


def pids_with_env(name: str, value: str) -> list[int]:
    """PIDs of the processes whose environment holds `name=value` (this one excluded).

    A unique value (a temp dir) set for a command marks every process it starts, even
    detached grandchildren, so they can be found and stopped by PID if it cannot stop them.
    """
    entry = f"{name}={value}"
    return find_pids(lambda environ: entry in environ, source="environ")


def wait_http_ok(url: str, timeout: float, check: ProcessGroup | None = None) -> None:
    """Poll `url` with GET until it answers 200, or raise ProcessFailed at the deadline.

    With `check`, also fail at once if one of its processes has exited.
    """
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if check is not None:
            check.raise_if_exited()
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}"
        except OSError as exc:
            last_error = str(exc)
        time.sleep(POLL_INTERVAL_S)
    raise ProcessFailed(f"{url} did not answer 200 within {timeout:.0f} s (last: {last_error})")


class ProcessGroup:
    """Child processes of one bench step, each stopped by PID when the group exits.

    Use as a context manager; the exit stops every child in reverse start order, also
    when the body raised or was interrupted.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, argv: Sequence[str],
              env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `argv` from the repository root; output goes to `<log_dir>/<name>.log`."""
        proc = spawn(argv, log_path=self.log_path(name), env=env, cwd=REPO_ROOT, detached=True)
        self._children.append((name, proc))
        return proc

    def log_path(self, name: str) -> Path:
        """Where the output of the child called `name` goes."""
        return self.log_dir / f"{name}.log"

    def raise_if_exited(self) -> None:
        """Raise ProcessFailed, with the end of its log, if a child has exited."""
        for name, proc in self._children:
            if proc.poll() is not None:
                tail = self.log_path(name).read_text(errors="replace")[-2000:]
                raise ProcessFailed(f"{name} exited with code {proc.returncode}:\n{tail}")

    def stop_all(self, timeout: float = 5.0) -> None:
        """Stop every child by PID, newest first."""
        while self._children:
            _, proc = self._children.pop()
            terminate(proc, timeout)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()
