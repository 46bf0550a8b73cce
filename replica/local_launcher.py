"""Replica processes on this machine: what a node agent runs.

Replicas are detached (own session): they outlive their agent and the controllers, and an
agent restarted on the same machine adopts them by PID and command line, or, for one
started warm, by the mark file its launcher left (PID, start time, replica id).

A warm spare. The launcher keeps one `python -m weir.replica --warm` process waiting
(interpreter up, `weir.replica.main` imported, no user code: ~0.45 s of CPU off the
replica's start) and hands it the next replica's arguments, environment and log file on
stdin (`weir.warm_process`), unless that replica's environment sets a variable the
interpreter reads only as it starts (then it starts cold). A spare costs ~50 MB resident
while it waits, so one is kept only for `SPARE_KEEP_S` after the agent starts or after one
was handed out or an app was deployed (`expect_replicas`); the next is started
`SPARE_AFTER_HANDOUT_S` after a hand-out, once the replica just handed one has done its
own start. `spare_plan` decides; `tend_spare` acts.

The blocking work (spawning, signalling) is synchronous here and wrapped for the agent's
event loop by the coroutines of the `ReplicaLauncher` interface at the end of the class.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import structlog

from weir.auth import TOKEN_ENV, cluster_token
from weir.etcd.records import ReplicaRecord
from weir.processes import (
    marked_runs,
    pid_runs,
    replica_command,
    signal_process,
    spare_command,
    spawn,
    terminate,
    wait_exit,
    write_mark,
)
from weir.runtime_env import PreparedEnv, process_env
from weir.warm_process import Assignment, hand_over, start_spare, starts_alike

log = structlog.get_logger("weir.replica.local_launcher")

#: How long a spare is kept after the agent starts, the last hand-out or the last deploy.
SPARE_KEEP_S = 60.0
#: How long after a hand-out the next spare starts: not while the replica it became still
#: imports the user's code and starts serving (2 cores are shared by all of it).
SPARE_AFTER_HANDOUT_S = 2.0


def spare_plan(has_spare: bool, now: float, since: float, handed_out_at: float | None
               ) -> Literal["start", "let go"] | None:
    """What to do about the warm spare at `now` (monotonic seconds): keep one from `since`
    (the agent's start, or the last hand-out) for `SPARE_KEEP_S`, but start none within
    `SPARE_AFTER_HANDOUT_S` of a hand-out (`handed_out_at`). Pure."""
    if has_spare:
        return "let go" if now - since >= SPARE_KEEP_S else None
    if now - since >= SPARE_KEEP_S:
        return None
    if handed_out_at is not None and now - handed_out_at < SPARE_AFTER_HANDOUT_S:
        return None
    return "start"


class LocalProcessLauncher:
    """Runs each replica as `python -m weir.replica` on this machine (a `ReplicaLauncher`
    whose handles are PIDs).

    Its own children are reaped through their Popen; none of its methods waits, since the
    agent calls them from its event loop: a child killed but not dead yet is reaped by
    whichever call comes next.
    """

    def __init__(self, etcd_endpoints: str, log_dir: str, cluster_id: str = "",
                 host: str = "127.0.0.1", *, keep_spare: bool = False) -> None:
        self.etcd_endpoints = etcd_endpoints
        self.log_dir = Path(log_dir)
        self.cluster_id = cluster_id
        self.host = host
        #: Whether to keep a warm spare (`tend_spare`).
        self.keep_spare = keep_spare
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._killed: dict[int, subprocess.Popen[bytes]] = {}
        self._spare: subprocess.Popen[bytes] | None = None
        self._spare_env: dict[str, str] = {}
        self._spare_since = time.monotonic()
        self._handed_out_at: float | None = None
        # A replica killed just before the controller exits (its shutdown kills the last
        # ones) is reaped on the way out, after the event loop, rather than left a zombie
        # for an init that may never reap it.
        weakref.finalize(self, _reap, self._killed)

    def spawn(self, record: ReplicaRecord, env: PreparedEnv) -> int:
        """Start the replica process, detached, logging to <log_dir>/<replica>.log."""
        self._reap_killed()
        child_env = process_env(env)
        child_env["WEIR_ETCD_ENDPOINTS"] = self.etcd_endpoints
        if record.gpu_indices or "GPU" in record.resources:
            child_env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, record.gpu_indices))
        # Always set, even empty: a replica never guesses its token from a state file.
        child_env[TOKEN_ENV] = cluster_token()
        cmd = replica_command(record.replica_id, self.etcd_endpoints, self.cluster_id,
                              self.host)
        log_path = self.log_dir / f"replica-{_file_name(record.replica_id)}.log"
        proc = self._hand_spare(record.replica_id, Assignment(
            cmd[3:], env.cwd or None, child_env, str(log_path)))
        if proc is None:
            proc = spawn(cmd, log_path=log_path, env=child_env, cwd=env.cwd or None,
                         detached=True)
        self._children[proc.pid] = proc
        return proc.pid

    def _hand_spare(self, replica_id: str, assignment: Assignment
                    ) -> subprocess.Popen[bytes] | None:
        """The spare, now running `assignment` (marked as `replica_id`), or None if there
        is none or it does not fit (an interpreter-start variable differs)."""
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        if not starts_alike(self._spare_env, assignment.env):
            log.info("the warm spare does not fit the replica's environment; starting it "
                     "cold", replica_id=replica_id)
            self._let_go(spare)
            return None
        # The mark first: an agent restarted right after finds the replica by it.
        write_mark(self._mark_path(replica_id), spare.pid, replica_id)
        if not hand_over(spare, assignment):
            log.warning("the warm spare had exited; starting the replica cold",
                        replica_id=replica_id, exit_code=spare.poll())
            self._mark_path(replica_id).unlink(missing_ok=True)
            return None
        now = time.monotonic()
        self._spare_since = self._handed_out_at = now
        log.info("replica handed to the warm spare", replica_id=replica_id, pid=spare.pid)
        return spare

    def tend_spare(self) -> None:
        """Start or let go of the warm spare, as `spare_plan` says. Blocking (a fork)."""
        if not self.keep_spare:
            return
        if self._spare is not None and self._spare.poll() is not None:
            log.warning("the warm spare exited; see its log", exit_code=self._spare.poll(),
                        log=str(self._spare_log))
            self._spare = None
            self.keep_spare = False  # it would fail again the same way
            return
        action = spare_plan(self._spare is not None, time.monotonic(), self._spare_since,
                            self._handed_out_at)
        if action == "start":
            self._spare_env = dict(os.environ)
            try:
                self._spare = start_spare(
                    spare_command(self.cluster_id, self.etcd_endpoints), self._spare_log,
                    self._spare_env)
            except OSError as exc:
                log.warning("cannot start a warm spare; replicas start cold", error=str(exc))
                self.keep_spare = False
                return
            log.info("warm spare started", pid=self._spare.pid)
        elif action == "let go" and self._spare is not None:
            self._let_go(self._spare)
            self._spare = None
            log.info("warm spare let go", unused_for_s=SPARE_KEEP_S)

    def expect_replicas(self) -> None:
        """An app was deployed: keep (or start) a spare for `SPARE_KEEP_S` from now."""
        self._spare_since = time.monotonic()

    def stop_spare(self) -> None:
        """Let go of the spare (the agent exits). Blocking, up to a second."""
        if self._spare is not None:
            self._let_go(self._spare)
            self._spare = None

    def _let_go(self, spare: subprocess.Popen[bytes]) -> None:
        # Its stdin closing without an assignment makes it exit; SIGTERM makes sure.
        if spare.stdin is not None:
            spare.stdin.close()
        terminate(spare, 1.0)

    @property
    def _spare_log(self) -> Path:
        return self.log_dir / "replica-spare.log"

    def _mark_path(self, replica_id: str) -> Path:
        return self.log_dir / f"replica-{_file_name(replica_id)}.mark"

    def _runs(self, pid: int, replica_id: str) -> bool:
        """Whether `pid` is still replica `replica_id`: by its command line (started cold)
        or by its mark (started warm)."""
        return pid_runs(pid, replica_id) or marked_runs(self._mark_path(replica_id), pid,
                                                         replica_id)

    def is_alive(self, record: ReplicaRecord) -> bool:
        """Reap our own children; check adopted ones through /proc."""
        self._reap_killed()
        proc = self._children.get(record.pid)
        if proc is not None:
            if proc.poll() is None:
                return True
            self._children.pop(record.pid, None)
            self._mark_path(record.replica_id).unlink(missing_ok=True)
            return False
        if self._runs(record.pid, record.replica_id):
            return True
        self._mark_path(record.replica_id).unlink(missing_ok=True)
        return False

    def kill_now(self, record: ReplicaRecord) -> None:
        """SIGKILL the replica if it is still the process we think it is."""
        if self.is_alive(record):
            proc = self._children.pop(record.pid, None)
            signal_process(proc if proc is not None else record.pid, signal.SIGKILL)
            if proc is not None:
                self._killed[proc.pid] = proc
        self._reap_killed()

    # The ReplicaLauncher interface, for the node agent's event loop.

    async def launch(self, record: ReplicaRecord, env: PreparedEnv) -> int:
        """Start the replica process; returns its PID."""
        return await asyncio.to_thread(self.spawn, record, env)

    async def adopt(self, assigned: Mapping[str, ReplicaRecord],
                    known: Mapping[str, int]) -> dict[str, int]:
        """The assigned replicas whose process (by the PID in their record or in `known`)
        still runs with their id on its command line, or as their mark file says."""
        out = {}
        for rid, record in assigned.items():
            pid = record.pid or known.get(rid, 0)
            if pid and self._runs(pid, rid):
                out[rid] = pid
        return out

    async def ended(self, running: Mapping[str, ReplicaRecord]) -> dict[str, str]:
        """The replicas whose process is gone (no reason: the replica's log says why)."""
        return {rid: "" for rid, record in running.items() if not self.is_alive(record)}

    async def kill(self, record: ReplicaRecord) -> None:
        """SIGKILL the replica's process, off the event loop."""
        await asyncio.to_thread(self.kill_now, record)

    async def tend(self) -> None:
        """`tend_spare`, off the event loop."""
        await asyncio.to_thread(self.tend_spare)

    async def close(self) -> None:
        """`stop_spare`, off the event loop."""
        await asyncio.to_thread(self.stop_spare)

    def _reap_killed(self) -> None:
        # kill() may run in a thread while is_alive() runs on the loop: iterate a copy.
        for pid, proc in list(self._killed.items()):
            if proc.poll() is not None:
                self._killed.pop(pid, None)


def _file_name(replica_id: str) -> str:
    return replica_id.replace("#", "_")


def _reap(killed: dict[int, subprocess.Popen[bytes]]) -> None:
    for proc in list(killed.values()):
        wait_exit(proc, 1.0)
