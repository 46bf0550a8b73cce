"""Local processes: starting them, knowing whether they run, finding them, stopping them.

The one home for what the controller's launcher, the local cluster, the etcd server, the
benches and the tests do with processes, so that they agree on the parts that bite:

- A child starts in a session of its own (detached): a Ctrl-C in a terminal reaches only
  the command, which then stops its children in order, and a replica outlives the
  controller that started it, to be adopted by the next leader.
- A PID is not proof of life: a zombie has exited, and a PID is reused, so a liveness
  check can require a marker on the command line (a replica id).
- A child is reaped by whoever holds its Popen, if anyone does: a bare waitpid behind a
  Popen's back makes it report exit code 0 later and, once the PID is reused, steal the
  new process's status. So the functions that wait or signal take either a PID or our own
  child's Popen (`ProcessRef`), and reap through the Popen when given one.
- A replica started warm (`weir.warm_process`: its process started before its
  assignment) has no replica id on its command line: its launcher leaves a mark file
  (PID, the process's start time, replica id) that `marked_runs` checks, and the process
  renames itself (`ASSIGNED_NAME`, in /proc/PID/comm) when it takes its assignment, which
  tells `replica_pids` a replica from a spare still waiting (`spare_pids`).
- Stopping is SIGTERM, a deadline, then SIGKILL; every wait is a poll with a deadline, and
  a PID of 0 or below is refused: os.kill and waitpid read it as our whole process group,
  or as every process.

Everything here returns at once except `wait_exit`, `terminate` and `kill`, which wait up
to their timeout: async code calls those in a thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, TypeAlias

#: A process: by PID, or our own child by its Popen (then waited for through it).
ProcessRef: TypeAlias = "int | subprocess.Popen[bytes]"

#: The module a replica process runs; its command line is built by `replica_command`.
REPLICA_MODULE = "weir.replica"

#: The flag of a replica process started warm (`spare_command`; the same as
#: `weir.warm_process.WARM_FLAG`, which this module does not import).
SPARE_FLAG = "--warm"

#: The process name (/proc/PID/comm, 15 bytes at most) a warm replica takes with its
#: assignment: from then on it counts as a replica, no longer as a spare.
ASSIGNED_NAME = "weir-replica"

_POLL_S = 0.02
#: SIGKILL cannot be refused, but a process in uninterruptible sleep dies when it wakes.
_KILL_WAIT_S = 5.0


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def spawn(cmd: Sequence[str], *, log_path: str | os.PathLike[str],
          env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
          detached: bool = True) -> subprocess.Popen[bytes]:
    """Start `cmd` with stdin from /dev/null and stdout and stderr appended to `log_path`
    (its folder is made if missing).

    `env` replaces the environment (None: inherit this one's). `detached` starts it in a
    session of its own: no terminal signal reaches it, and it outlives this process.
    """
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as log:
        return subprocess.Popen(list(cmd), cwd=cwd, env=None if env is None else dict(env),
                                stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=detached)


def pid_runs(pid: int, marker: str = "") -> bool:
    """Whether `pid` is a live (non-zombie) process whose command line contains `marker`.

    A process that has just been started may show an empty command line for a moment.
    """
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        if marker and marker.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return False
    except (OSError, IndexError):
        if sys.platform.startswith("linux"):
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
    return True


def signal_process(proc: ProcessRef, sig: int) -> bool:
    """Send `sig`; returns False if the process was already gone (or is not ours to signal).

    A Popen that has been reaped is never signalled: its PID may belong to another process.
    """
    if isinstance(proc, subprocess.Popen):
        if proc.poll() is not None:
            return False
        pid = proc.pid
    else:
        pid = proc
    if pid <= 0:
        return False
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def wait_exit(proc: ProcessRef, timeout: float) -> bool:
    """Poll until the process has exited (reaping it if it is our child), at most `timeout`
    seconds; returns whether it has."""
    deadline = time.monotonic() + timeout
    while not _exited(proc):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def terminate(proc: ProcessRef, timeout: float) -> bool:
    """SIGTERM, wait up to `timeout` seconds, then SIGKILL; reaps our own child either way.

    Returns True if it exited within `timeout` (False: it had to be killed).
    """
    signal_process(proc, signal.SIGTERM)
    if wait_exit(proc, timeout):
        return True
    kill(proc)
    return False


def kill(proc: ProcessRef, timeout: float = _KILL_WAIT_S) -> bool:
    """SIGKILL at once and wait up to `timeout` seconds for the end (reaping our own child);
    returns whether it has ended."""
    signal_process(proc, signal.SIGKILL)
    return wait_exit(proc, timeout)


def _exited(proc: ProcessRef) -> bool:
    if isinstance(proc, subprocess.Popen):
        return proc.poll() is not None
    if proc <= 0:
        return True
    try:
        if os.waitpid(proc, os.WNOHANG)[0] == proc:
            return True
    except ChildProcessError:  # not our child: its parent reaps it
        return not pid_runs(proc)
    if pid_runs(proc):
        return False
    # Our child died between the two looks: reap the zombie, or it stays one.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(proc, os.WNOHANG)
    return True


def find_pids(match: Callable[[list[str]], bool], *,
              source: Literal["cmdline", "environ"] = "cmdline") -> list[int]:
    """PIDs of the live processes but this one that `match` accepts.

    `match` sees the process's arguments (source "cmdline") or its NAME=value environment
    entries ("environ"), one string each. Processes we may not read are skipped, and one
    that has just been started may show empty ones for a moment.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / source).read_bytes()
        except OSError:
            continue
        items = raw.split(b"\0")
        if raw.endswith(b"\0"):
            items.pop()
        if match([item.decode(errors="replace") for item in items]) and pid_runs(int(entry.name)):
            found.append(int(entry.name))
    return found


def replica_command(replica_id: str, etcd_endpoints: str, cluster_id: str,
                    host: str = "127.0.0.1") -> list[str]:
    """The command line of a replica process (what `replica_pids` recognises), serving on
    `host`."""
    return [sys.executable, "-m", REPLICA_MODULE, "--replica-id", replica_id,
            "--etcd", etcd_endpoints, "--cluster-id", cluster_id, "--host", host]


def spare_command(cluster_id: str, etcd_endpoints: str) -> list[str]:
    """The command line of a warm replica process (a spare until it takes its assignment
    on stdin), of cluster `cluster_id`: what `spare_pids` recognises. The etcd endpoints
    are there for whoever looks for a cluster's processes by them; the spare reads its
    own from its assignment."""
    return [sys.executable, "-m", REPLICA_MODULE, SPARE_FLAG, "--cluster-id", cluster_id,
            "--etcd", etcd_endpoints]


def replica_pids(cluster_id: str) -> list[int]:
    """PIDs of the live replica processes of a cluster, found by their command line: those
    started cold, and those started warm that took their assignment (not the spares)."""
    return [pid for pid in find_pids(_of_cluster(cluster_id))
            if not _is_spare_command(pid) or process_name(pid) == ASSIGNED_NAME]


def spare_pids(cluster_id: str) -> list[int]:
    """PIDs of a cluster's warm replica processes still waiting for an assignment."""
    return [pid for pid in find_pids(_of_cluster(cluster_id))
            if _is_spare_command(pid) and process_name(pid) != ASSIGNED_NAME]


def _of_cluster(cluster_id: str) -> Callable[[list[str]], bool]:
    def of_cluster(args: list[str]) -> bool:
        return REPLICA_MODULE in args and any(
            args[i:i + 2] == ["--cluster-id", cluster_id] for i in range(len(args) - 1))

    return of_cluster


def _is_spare_command(pid: int) -> bool:
    try:
        return SPARE_FLAG.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def process_name(pid: int) -> str:
    """The process's name (/proc/PID/comm), "" if it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def name_this_process(name: str) -> None:
    """Set this process's name (/proc/self/comm; what ps shows). Linux only; elsewhere, or
    if refused, a no-op. Call it from the main thread: the name is per thread."""
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(name[:15])


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (/proc/PID/stat's field 22):
    with the PID, it names one process, since a reused PID starts later. None if gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def write_mark(path: str | os.PathLike[str], pid: int, marker: str) -> None:
    """Leave a mark file saying that process `pid`, as started now, is `marker` (a replica
    id): what `marked_runs` checks for a process whose command line does not say it."""
    ticks = start_ticks(pid)
    Path(path).write_text(json.dumps({"pid": pid, "start_ticks": ticks, "marker": marker}))


def marked_runs(path: str | os.PathLike[str], pid: int, marker: str) -> bool:
    """Whether the mark file at `path` names process `pid` as `marker`, and that very
    process (same start time) still runs."""
    try:
        mark = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(mark, dict) and mark.get("pid") == pid and mark.get("marker") == marker
            and mark.get("start_ticks") is not None and mark["start_ticks"] == start_ticks(pid)
            and pid_runs(pid))
