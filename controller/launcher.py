"""Where replicas run. The controller starts them only through a Launcher, so that local
processes today and Kubernetes pods later are one interface.

Local replicas are detached (own session): they outlive a controller, and a new leader
adopts them from their etcd records; liveness is checked by PID and command line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Protocol

from weir.controller.goal import ReplicaRecord
from weir.processes import pid_runs
from weir.runtime_env import PreparedEnv, process_env


class Launcher(Protocol):
    """Starts, checks and kills replica processes."""

    def launch(self, record: ReplicaRecord, env: PreparedEnv) -> int:
        """Start the replica; returns its PID."""

    def is_alive(self, record: ReplicaRecord) -> bool:
        """Whether the replica's process still runs."""

    def kill(self, record: ReplicaRecord) -> None:
        """Kill the replica at once."""


class LocalProcessLauncher:
    """Runs each replica as `python -m weir.replica` on this machine."""

    def __init__(self, etcd_endpoints: str, log_dir: str, cluster_id: str = "") -> None:
        self.etcd_endpoints = etcd_endpoints
        self.log_dir = Path(log_dir)
        self.cluster_id = cluster_id
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def launch(self, record: ReplicaRecord, env: PreparedEnv) -> int:
        """Start the replica process, detached, logging to <log_dir>/<replica>.log."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"replica-{record.replica_id.replace('#', '_')}.log"
        cmd = [sys.executable, "-m", "weir.replica", "--replica-id", record.replica_id,
               "--etcd", self.etcd_endpoints, "--cluster-id", self.cluster_id]
        child_env = process_env(env)
        child_env["WEIR_ETCD_ENDPOINTS"] = self.etcd_endpoints
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, cwd=env.cwd or None, env=child_env,
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self._children[proc.pid] = proc
        return proc.pid

    def is_alive(self, record: ReplicaRecord) -> bool:
        """Reap our own children; check adopted ones through /proc."""
        proc = self._children.get(record.pid)
        if proc is not None:
            if proc.poll() is None:
                return True
            del self._children[record.pid]
            return False
        return pid_runs(record.pid, record.replica_id)

    def kill(self, record: ReplicaRecord) -> None:
        """SIGKILL the replica if it is still the process we think it is."""
        if self.is_alive(record):
            try:
                os.kill(record.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc = self._children.get(record.pid)
        if proc is not None:
            proc.wait(timeout=5)
            del self._children[record.pid]
