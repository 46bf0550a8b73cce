"""A process started ahead: its interpreter up and Weir's imports done, waiting for the one
job it will do.

Why. A Python child that runs user code (the app build) spends most of its first half
second starting the interpreter and importing Weir (pydantic models, protobufs,
cloudpickle) before it reaches the user's module. Started ahead, while the parent has
nothing better to do, that cost is off the path of the deploy that needs it.

How. The parent starts `python -m <module> --warm`; the child imports what it needs, then
blocks reading one `Assignment` (a JSON line) on stdin: the arguments, working directory
and environment it would have been started with. It takes them on (`enter`) before any
user code is imported, then runs as if started cold. A child whose stdin closes without
an assignment (the parent let it go, or died) exits.

What differs from a cold start: whatever the interpreter reads only when it starts.
PYTHONPATH is applied by hand (its entries go where the interpreter would have put
them), but PYTHONHASHSEED, PYTHONDONTWRITEBYTECODE, PYTHONWARNINGS and
the like keep the values of the parent's environment, and modules Weir imported are
already in `sys.modules` (a user module named like one of them is shadowed by it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

#: The flag that starts a module warm (it then waits for its assignment on stdin).
WARM_FLAG = "--warm"


@dataclass(frozen=True)
class Assignment:
    """What a warm child would have been started with: its arguments (after the module),
    working directory (None: the parent's), whole environment, and the file its stdout and
    stderr append to (None: they stay as it was started with)."""

    argv: list[str]
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    log_path: str | None = None

    def to_line(self) -> bytes:
        """One JSON line, as the child reads it."""
        return json.dumps({"argv": self.argv, "cwd": self.cwd, "env": self.env,
                           "log_path": self.log_path}).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Assignment:
        """Inverse of `to_line`; ValueError if it is not one."""
        data = json.loads(line)
        if not isinstance(data, dict) or not isinstance(data.get("argv"), list):
            raise ValueError(f"not an assignment: {line[:80]!r}")
        return cls([str(a) for a in data["argv"]], data.get("cwd"),
                   {str(k): str(v) for k, v in (data.get("env") or {}).items()},
                   data.get("log_path") or None)


def start_warm(python: str, module: str, env: Mapping[str, str] | None = None
               ) -> subprocess.Popen[bytes]:
    """Start `python -m module --warm` with pipes on stdin (its assignment), stdout and
    stderr. Blocking (a fork and exec): call it off the event loop."""
    return subprocess.Popen([python, "-m", module, WARM_FLAG], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=None if env is None else dict(env))


def start_spare(cmd: list[str], log_path: str | os.PathLike[str],
                env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `cmd` (a `... --warm` command line) detached, in a session of its own, as a
    long-lived server would be: a pipe on stdin (its assignment, whose `log_path` it then
    logs to), stdout and stderr appended to `log_path` until then. Blocking."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=None if env is None else dict(env))


def hand_over(proc: subprocess.Popen[bytes], assignment: Assignment) -> bool:
    """Give a warm child its assignment and let it run on its own; False if it had exited
    (or exits as it is handed one). Blocking, but short: one line into a pipe."""
    if proc.poll() is not None or proc.stdin is None:
        return False
    try:
        proc.stdin.write(assignment.to_line())
        proc.stdin.close()
    except OSError:  # BrokenPipeError: it died meanwhile
        return False
    return True


#: Variables the interpreter (or the C library under it) reads only as it starts, beyond
#: the PYTHON* family: a warm child keeps the values it was started with.
_READ_AT_START = ("LD_PRELOAD", "LD_LIBRARY_PATH")


def starts_alike(started: Mapping[str, str], assigned: Mapping[str, str]) -> bool:
    """Whether a child started with environment `started` runs an assignment with
    environment `assigned` as a cold start would: every variable read only at interpreter
    start (PYTHONHASHSEED, PYTHONWARNINGS, LD_PRELOAD...) has the same value in both.
    PYTHONPATH is the exception: `enter` applies it. Pure."""

    def read_at_start(env: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in env.items()
                if (k.startswith("PYTHON") or k.startswith("MALLOC_") or k in _READ_AT_START)
                and k != "PYTHONPATH"}

    return read_at_start(started) == read_at_start(assigned)


def run_assigned(proc: subprocess.Popen[bytes], assignment: Assignment,
                 timeout: float) -> tuple[int, bytes, bytes]:
    """Hand a warm child its assignment and wait for it to finish: (exit code, stdout,
    stderr). Killed and subprocess.TimeoutExpired after `timeout` seconds. Blocking."""
    try:
        out, err = proc.communicate(assignment.to_line(), timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, out, err


def wait_for_assignment(stream: BinaryIO) -> Assignment | None:
    """In the warm child: the assignment read from `stream` (blocking), or None once the
    stream closed without one (the parent let the child go, or died)."""
    line = stream.readline()
    return Assignment.from_line(line) if line.strip() else None


def enter(assignment: Assignment) -> None:
    """In the warm child: take on the working directory, environment and import path a
    cold `python -m` start with `assignment` would have had: sys.path begins with the
    working directory, then PYTHONPATH's entries made absolute. With a `log_path`, stdout
    and stderr append to it from now on and stdin reads /dev/null, as a spawned server's."""
    if assignment.log_path:
        _redirect(assignment.log_path)
    started_in = os.getcwd()
    old = _python_path(os.environ.get("PYTHONPATH"), started_in)
    if assignment.cwd:
        os.chdir(assignment.cwd)
    os.environ.clear()
    os.environ.update(assignment.env)
    cwd = os.getcwd()
    new = _python_path(os.environ.get("PYTHONPATH"), cwd)
    rest = [p for p in sys.path[1:] if p not in old]
    sys.path[:] = [cwd, *new, *rest]


def _redirect(log_path: str) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    for src, dst in ((null, 0), (log, 1), (log, 2)):
        os.dup2(src, dst)
    os.close(log)
    os.close(null)


def _python_path(value: str | None, cwd: str) -> list[str]:
    """The sys.path entries the interpreter makes of PYTHONPATH started in `cwd`. Pure."""
    if not value:
        return []
    return [os.path.normpath(os.path.join(cwd, p)) for p in value.split(os.pathsep)]
