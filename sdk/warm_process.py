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
from typing import BinaryIO

#: The flag that starts a module warm (it then waits for its assignment on stdin).
WARM_FLAG = "--warm"


@dataclass(frozen=True)
class Assignment:
    """What a warm child would have been started with: its arguments (after the module),
    working directory (None: the parent's) and whole environment."""

    argv: list[str]
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def to_line(self) -> bytes:
        """One JSON line, as the child reads it."""
        return json.dumps({"argv": self.argv, "cwd": self.cwd, "env": self.env}).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Assignment:
        """Inverse of `to_line`; ValueError if it is not one."""
        data = json.loads(line)
        if not isinstance(data, dict) or not isinstance(data.get("argv"), list):
            raise ValueError(f"not an assignment: {line[:80]!r}")
        return cls([str(a) for a in data["argv"]], data.get("cwd"),
                   {str(k): str(v) for k, v in (data.get("env") or {}).items()})


def start_warm(python: str, module: str, env: Mapping[str, str] | None = None
               ) -> subprocess.Popen[bytes]:
    """Start `python -m module --warm` with pipes on stdin (its assignment), stdout and
    stderr. Blocking (a fork and exec): call it off the event loop."""
    return subprocess.Popen([python, "-m", module, WARM_FLAG], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=None if env is None else dict(env))


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
    working directory, then PYTHONPATH's entries made absolute."""
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


def _python_path(value: str | None, cwd: str) -> list[str]:
    """The sys.path entries the interpreter makes of PYTHONPATH started in `cwd`. Pure."""
    if not value:
        return []
    return [os.path.normpath(os.path.join(cwd, p)) for p in value.split(os.pathsep)]
