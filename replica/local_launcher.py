"""Replica processes on this machine: what a node agent runs.

Replicas are detached (own session): they outlive their agent and the controllers, and an
agent restarted on the same machine adopts them by PID and command line.

The blocking work (spawning, signalling) is synchronous here and wrapped for the agent's
event loop by the coroutines of the `ReplicaLauncher` interface at the end of the class.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import weakref
from collections.abc import Mapping
from pathlib import Path

from weir.auth import TOKEN_ENV, cluster_token
from weir.etcd.records import ReplicaRecord
from weir.processes import pid_runs, replica_command, signal_process, spawn, wait_exit
from weir.runtime_env import PreparedEnv, process_env


class LocalProcessLauncher:
    """Runs each replica as `python -m weir.replica` on this machine (a `ReplicaLauncher`
    whose handles are PIDs).

    Its own children are reaped through their Popen; none of its methods waits, since the
    agent calls them from its event loop: a child killed but not dead yet is reaped by
    whichever call comes next.
    """

    def __init__(self, etcd_endpoints: str, log_dir: str, cluster_id: str = "",
                 host: str = "127.0.0.1") -> None:
        self.etcd_endpoints = etcd_endpoints
        self.log_dir = Path(log_dir)
        self.cluster_id = cluster_id
        self.host = host
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._killed: dict[int, subprocess.Popen[bytes]] = {}
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
        proc = spawn(replica_command(record.replica_id, self.etcd_endpoints, self.cluster_id,
                                     self.host),
                     log_path=self.log_dir / f"replica-{record.replica_id.replace('#', '_')}.log",
                     env=child_env, cwd=env.cwd or None, detached=True)
        self._children[proc.pid] = proc
        return proc.pid

    def is_alive(self, record: ReplicaRecord) -> bool:
        """Reap our own children; check adopted ones through /proc."""
        self._reap_killed()
        proc = self._children.get(record.pid)
        if proc is not None:
            if proc.poll() is None:
                return True
            self._children.pop(record.pid, None)
            return False
        return pid_runs(record.pid, record.replica_id)

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
        still runs with their id on its command line."""
        out = {}
        for rid, record in assigned.items():
            pid = record.pid or known.get(rid, 0)
            if pid and pid_runs(pid, rid):
                out[rid] = pid
        return out

    async def ended(self, running: Mapping[str, ReplicaRecord]) -> dict[str, str]:
        """The replicas whose process is gone (no reason: the replica's log says why)."""
        return {rid: "" for rid, record in running.items() if not self.is_alive(record)}

    async def kill(self, record: ReplicaRecord) -> None:
        """SIGKILL the replica's process, off the event loop."""
        await asyncio.to_thread(self.kill_now, record)

    def _reap_killed(self) -> None:
        # kill() may run in a thread while is_alive() runs on the loop: iterate a copy.
        for pid, proc in list(self._killed.items()):
            if proc.poll() is not None:
                self._killed.pop(pid, None)


def _reap(killed: dict[int, subprocess.Popen[bytes]]) -> None:
    for proc in list(killed.values()):
        wait_exit(proc, 1.0)
