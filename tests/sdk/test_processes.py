"""weir.processes with real child processes: each test's children are killed by PID at the
end, and every wait is a poll with a deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from weir.processes import (
    ASSIGNED_NAME,
    find_pids,
    kill,
    marked_runs,
    pid_runs,
    process_name,
    replica_command,
    replica_pids,
    signal_process,
    spare_command,
    spare_pids,
    spawn,
    start_ticks,
    terminate,
    wait_exit,
    write_mark,
)

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
# Says "ready" once SIGTERM is ignored, so that the test never signals it too early.
STUBBORN = [sys.executable, "-c",
            "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)"]

Spawner = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Spawner]:
    """spawn() that logs under tmp_path and kills every child it started at teardown."""
    children: list[subprocess.Popen[bytes]] = []

    def start(cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        kw.setdefault("log_path", tmp_path / f"child-{len(children)}.log")
        proc = spawn(cmd, **kw)
        children.append(proc)
        return proc

    yield start
    for proc in children:
        kill(proc)
        assert proc.poll() is not None


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_spawn_logs_output_with_the_given_env_and_cwd(start: Spawner, tmp_path: Path) -> None:
    log = tmp_path / "new" / "folder" / "out.log"
    log.parent.mkdir(parents=True)
    log.write_text("before\n")
    proc = start([sys.executable, "-c",
                  "import os, sys; print(os.getcwd(), flush=True); "
                  "print(os.environ['MARK'], flush=True); "
                  "print(sys.stdin.read() == '', file=sys.stderr, flush=True)"],
                 log_path=log, env={**os.environ, "MARK": "m-1"}, cwd=tmp_path)
    assert wait_exit(proc, 10)
    assert proc.returncode == 0
    assert log.read_text().split() == ["before", str(tmp_path), "m-1", "True"]


def test_spawn_makes_the_log_folder(start: Spawner, tmp_path: Path) -> None:
    log = tmp_path / "a" / "b" / "c.log"
    proc = start([sys.executable, "-c", "print('hi')"], log_path=log)
    assert wait_exit(proc, 10)
    assert log.read_text() == "hi\n"


def test_a_detached_child_has_a_session_of_its_own(start: Spawner) -> None:
    detached = start(SLEEPER)
    attached = start(SLEEPER, detached=False)
    assert os.getsid(detached.pid) == detached.pid
    assert os.getsid(attached.pid) == os.getsid(0)


def test_pid_runs_checks_the_marker_and_sees_zombies_as_dead(start: Spawner) -> None:
    marker = uuid.uuid4().hex
    proc = start([*SLEEPER, marker])
    assert pid_runs(proc.pid)
    # Right after exec the kernel may show an empty command line for a moment.
    wait_until(lambda: pid_runs(proc.pid, marker))
    assert not pid_runs(proc.pid, "not-" + marker)
    os.kill(proc.pid, signal.SIGKILL)
    wait_until(lambda: state(proc.pid) == "Z")  # exited, not reaped yet
    assert not pid_runs(proc.pid)
    assert not pid_runs(0) and not pid_runs(-1)


def test_wait_exit_times_out_on_a_live_child_and_reaps_a_dead_one(start: Spawner) -> None:
    proc = start(SLEEPER)
    assert not wait_exit(proc, 0.1)
    assert not wait_exit(proc.pid, 0.1)
    os.kill(proc.pid, signal.SIGKILL)
    assert wait_exit(proc.pid, 10)  # by PID: reaped with waitpid
    with pytest.raises(ChildProcessError):
        os.waitpid(proc.pid, os.WNOHANG)


def test_terminate_a_child_that_obeys(start: Spawner) -> None:
    proc = start(SLEEPER)
    assert terminate(proc, 10)
    assert proc.returncode == -signal.SIGTERM


def test_terminate_kills_a_child_that_ignores_sigterm(start: Spawner, tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    proc = start(STUBBORN, log_path=log)
    wait_until(lambda: log.read_text() == "ready\n")
    started = time.monotonic()
    assert not terminate(proc, 0.3)
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_terminate_by_pid_reaps_our_child(start: Spawner) -> None:
    proc = start(SLEEPER)
    assert terminate(proc.pid, 10)
    assert not pid_runs(proc.pid)
    with pytest.raises(ChildProcessError):
        os.waitpid(proc.pid, os.WNOHANG)


def test_kill_ends_it_at_once(start: Spawner, tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    proc = start(STUBBORN, log_path=log)
    wait_until(lambda: log.read_text() == "ready\n")
    assert kill(proc)
    assert proc.returncode == -signal.SIGKILL


def test_a_reaped_child_or_pid_zero_is_never_signalled(start: Spawner) -> None:
    proc = start([sys.executable, "-c", "pass"])
    assert wait_exit(proc, 10)
    assert not signal_process(proc, signal.SIGKILL)
    # os.kill(0, sig) would signal this whole process group, pytest included.
    assert not signal_process(0, signal.SIGTERM)
    assert not signal_process(-1, signal.SIGTERM)
    assert terminate(0, 0.1) and kill(-1, 0.1)


def test_find_pids_by_arguments_and_by_environment(start: Spawner) -> None:
    token = uuid.uuid4().hex
    by_arg = start([*SLEEPER, f"--token={token}"])
    by_env = start(SLEEPER, env={**os.environ, "WEIR_TEST_TOKEN": token})
    wait_until(lambda: find_pids(lambda args: f"--token={token}" in args) == [by_arg.pid])
    wait_until(lambda: find_pids(lambda env: f"WEIR_TEST_TOKEN={token}" in env,
                                 source="environ") == [by_env.pid])
    assert os.getpid() not in find_pids(lambda args: True)
    kill(by_arg)
    assert find_pids(lambda args: f"--token={token}" in args) == []


def test_replica_pids_finds_what_replica_command_starts(start: Spawner) -> None:
    cluster, other = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    # The replica's own arguments after a sleeper's code: the same command line to match,
    # with no etcd needed.
    mine = start([*SLEEPER, *replica_command("app#d#1", "127.0.0.1:1", cluster)[1:]])
    start([*SLEEPER, *replica_command("app#d#2", "127.0.0.1:1", other)[1:]])
    not_a_replica = start([*SLEEPER, "--cluster-id", cluster])
    wait_until(lambda: set(find_pids(lambda args: cluster in args))
               == {mine.pid, not_a_replica.pid})  # both command lines readable
    assert replica_pids(cluster) == [mine.pid]
    kill(mine)
    assert replica_pids(cluster) == []


# Renames itself (as a warm replica does on taking its assignment) once told on stdin.
RENAMER = [sys.executable, "-c",
           "import sys, time; sys.stdin.readline(); "
           f"open('/proc/self/comm', 'w').write({ASSIGNED_NAME!r}); time.sleep(60)"]


def test_a_spare_counts_as_a_replica_only_once_assigned() -> None:
    cluster = uuid.uuid4().hex[:12]
    spare = subprocess.Popen([*RENAMER, *spare_command(cluster, "127.0.0.1:1")[1:]],
                             stdin=subprocess.PIPE)
    try:
        wait_until(lambda: spare_pids(cluster) == [spare.pid])
        assert replica_pids(cluster) == []
        assert spare.stdin is not None
        spare.stdin.write(b"go\n")
        spare.stdin.close()
        wait_until(lambda: process_name(spare.pid) == ASSIGNED_NAME)
        assert replica_pids(cluster) == [spare.pid]
        assert spare_pids(cluster) == []
    finally:
        kill(spare)
    assert replica_pids(cluster) == [] and spare_pids(cluster) == []


def test_a_mark_names_one_process_by_pid_and_start_time(start: Spawner,
                                                         tmp_path: Path) -> None:
    proc = start(SLEEPER)
    mark = tmp_path / "r.mark"
    write_mark(mark, proc.pid, "app#d#1")
    assert start_ticks(proc.pid) is not None
    assert marked_runs(mark, proc.pid, "app#d#1")
    assert not marked_runs(mark, proc.pid, "app#d#2")
    assert not marked_runs(mark, os.getpid(), "app#d#1")  # another PID
    assert not marked_runs(tmp_path / "none.mark", proc.pid, "app#d#1")
    # The same PID with another start time (a reused PID) is another process.
    mark.write_text(mark.read_text().replace(f'"start_ticks": {start_ticks(proc.pid)}',
                                             '"start_ticks": 1'))
    assert not marked_runs(mark, proc.pid, "app#d#1")
    write_mark(mark, proc.pid, "app#d#1")
    kill(proc)
    assert not marked_runs(mark, proc.pid, "app#d#1")
    assert start_ticks(proc.pid) is None
