"""The simulated fleet spread over worker processes (`bench.sim_worker`), as the bench's
coordinator sees it.

One Python process holding 5,000 replica streams fell behind (its node leases lapsed), so
the bench starts `--sim-procs` workers, each with its share of the simulated nodes and so of
the replicas the leader places on them. They speak JSON lines over a Unix socket: the
coordinator sends commands (`pick`, `change`, `churn`, `stop`) and gets one answer per
command; each worker also sends its `Fleet.status()` every STATUS_S, which `aggregate`
sums into one `FleetStatus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.processes import REPO_ROOT
from weir.processes import spawn, terminate

#: How often a worker sends its status.
STATUS_S = 0.1
#: How long the workers get to connect once started.
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class FleetStatus:
    """The whole simulated fleet, summed over the workers' last statuses."""

    replicas: int = 0
    #: "app/deployment" -> replicas of it.
    deployment_replicas: dict[str, int] = field(default_factory=dict)
    #: "app/deployment" -> version -> running replicas of it.
    running: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Leader address -> sessions it has taken (registered).
    adopted: dict[str, int] = field(default_factory=dict)
    #: The wall time of the oldest status summed: everything here is at least that fresh.
    as_of: float = 0.0

    def running_count(self, key: str | None = None) -> int:
        """Running replicas (of one "app/deployment")."""
        return sum(sum(v.values()) for k, v in self.running.items()
                   if key is None or k == key)


def aggregate(statuses: Sequence[dict[str, Any]]) -> FleetStatus:
    """Sum the workers' `Fleet.status()` dicts into one status (none: an empty fleet)."""
    deployment_replicas: dict[str, int] = {}
    running: dict[str, dict[str, int]] = {}
    adopted: dict[str, int] = {}
    for status in statuses:
        for key, d in status["deployments"].items():
            deployment_replicas[key] = deployment_replicas.get(key, 0) + d["replicas"]
            versions = running.setdefault(key, {})
            for version, n in d["running"].items():
                versions[version] = versions.get(version, 0) + n
        for leader, n in status["adopted"].items():
            adopted[leader] = adopted.get(leader, 0) + n
    return FleetStatus(
        replicas=sum(s["replicas"] for s in statuses),
        deployment_replicas=deployment_replicas, running=running, adopted=adopted,
        as_of=min((s["wall"] for s in statuses), default=0.0))


def split_nodes(nodes: int, procs: int) -> list[list[int]]:
    """Node indices per worker, dealt round-robin (raises ValueError naming --nodes when a
    worker would get none: it would hold no replica)."""
    if nodes < procs:
        raise ValueError(f"--nodes {nodes} is fewer than --sim-procs {procs}: give each "
                         f"simulation process a node at least")
    return [list(range(i, nodes, procs)) for i in range(procs)]


class Worker:
    """One worker process and its connection."""

    def __init__(self, index: int, proc: Any) -> None:
        self.index = index
        self.proc = proc
        self.status: dict[str, Any] | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.answers: dict[int, asyncio.Future[dict[str, Any]]] = {}


class SimPool:
    """The worker processes: start them, follow their statuses, send them commands."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workers: list[Worker] = []
        self._server: asyncio.AbstractServer | None = None
        self._ids = itertools.count(1)
        self._connected = asyncio.Event()

    async def start(self, procs: int, etcd: str, nodes: int, node_lease_ttl: float,
                    channels: int, nice: int = 0) -> None:
        """Start `procs` workers sharing `nodes` simulated nodes, at CPU priority `nice`
        (`nice -n`); return once all connected."""
        socket_path = self.workdir / "sim.sock"
        self._server = await asyncio.start_unix_server(self._serve, path=str(socket_path),
                                                       limit=2**24)
        for index, mine in enumerate(split_nodes(nodes, procs)):
            cmd = [sys.executable, "-m", "bench.sim_worker", "--socket", str(socket_path),
                   "--index", str(index), "--etcd", etcd,
                   "--nodes", ",".join(map(str, mine)), "--node-lease-ttl",
                   str(node_lease_ttl), "--channels", str(channels)]
            if nice:
                cmd = ["nice", "-n", str(nice), *cmd]
            proc = spawn(cmd, log_path=self.workdir / f"sim-worker-{index}.log", cwd=REPO_ROOT)
            self.workers.append(Worker(index, proc))
        await asyncio.wait_for(self._connected.wait(), START_TIMEOUT_S)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = json.loads(await reader.readline())
        worker = self.workers[hello["index"]]
        worker.writer = writer
        if all(w.writer is not None for w in self.workers):
            self._connected.set()
        while line := await reader.readline():
            msg = json.loads(line)
            if "status" in msg:
                worker.status = msg["status"]
            elif (answer := worker.answers.pop(msg["id"], None)) is not None:
                answer.set_result(msg)

    async def call(self, index: int, op: str, **args: Any) -> dict[str, Any]:
        """Send worker `index` the command `op` with `args`; its answer."""
        worker = self.workers[index]
        assert worker.writer is not None
        request_id = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        worker.answers[request_id] = answer
        worker.writer.write(json.dumps({"id": request_id, "op": op, **args}).encode() + b"\n")
        await worker.writer.drain()
        return await asyncio.wait_for(answer, 30)

    def status(self) -> FleetStatus:
        """The fleet as the workers last told it."""
        return aggregate([w.status for w in self.workers if w.status is not None])

    async def pick(self) -> tuple[int, dict[str, Any]] | None:
        """A running replica at random (its worker, and the worker's `pick` answer:
        replica, key), workers weighted by how many replicas they run."""
        weights = [aggregate([w.status]).running_count() if w.status else 0
                   for w in self.workers]
        if not any(weights):
            return None
        index = random.choices(range(len(self.workers)), weights)[0]
        answer = await self.call(index, "pick")
        return (index, answer) if answer.get("replica") else None

    async def broadcast(self, op: str, **args: Any) -> None:
        """Send every worker `op`."""
        await asyncio.gather(*(self.call(w.index, op, **args) for w in self.workers))

    async def close(self) -> None:
        """Ask every worker to stop (each withdraws its nodes), then stop them by PID."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.broadcast("stop"), 15)
        self.stop()
        if self._server is not None:
            self._server.close()

    def stop(self) -> None:
        """Stop every worker process by PID (SIGTERM, then SIGKILL)."""
        for w in self.workers:
            terminate(w.proc, 10.0)
