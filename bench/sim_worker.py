"""One simulation process of the control-plane scale bench: a `bench.sim_fleet.Fleet` of
the nodes it is given, and so of the replicas the leader places on them, driven by the
bench's coordinator over a Unix socket (`bench.sim_pool`).

    python -m bench.sim_worker --socket PATH --index 0 --etcd HOST:PORT --nodes 0,4 \\
        --node-lease-ttl 15 --channels 32

Commands, one JSON line each, one answer each (same `id`):
- `pick`: a running replica at random (`replica`, `app`, `deployment`; none: null);
- `change`: set `replica`'s `state` and/or `ongoing` and have its session report now
  (answers with the wall time of the change, when the bench's probe starts);
- `churn`: change the load of `fraction` of the running replicas each second;
- `stop`: withdraw the nodes and exit.
Every STATUS_S it also sends `{"status": Fleet.status()}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from bench.sim_fleet import SIM_REPLICA_ADDRESS, Fleet, pool_replica_channels
from bench.sim_pool import STATUS_S
from weir.dataplane.route_table import LeaderLocator
from weir.etcd.etcd_store import EtcdStore
from weir.runtime import configure_logging


def answer(fleet: Fleet, msg: dict[str, Any]) -> dict[str, Any]:
    """The answer to a command other than `stop` (applying it)."""
    op = msg["op"]
    if op == "pick":
        r = fleet.pick()
        return {"replica": r.record.replica_id if r else None,
                "app": r.record.app if r else None,
                "deployment": r.record.deployment if r else None}
    if op == "change":
        replica = fleet.replicas.get(msg["replica"])
        if replica is None or replica.session is None:
            return {"wall": None}
        if msg.get("state") is not None:
            replica.state = msg["state"]
        if msg.get("ongoing") is not None:
            replica.ongoing = msg["ongoing"]
        # A change of state goes out at once, as a real replica's does.
        replica.session.report_soon(urgent=msg.get("state") is not None)
        return {"wall": time.time()}
    if op == "churn":
        fleet.start_churn(msg["fraction"])
        return {}
    raise ValueError(f"unknown command {op!r}: expected pick, change, churn or stop")


async def run(opts: argparse.Namespace) -> None:
    """Hold the fleet until told to stop."""
    store = EtcdStore(opts.etcd)
    await store.connect()
    pool = pool_replica_channels(opts.channels)
    # The real locator: one watch of the leader key for every replica of this process.
    locator = LeaderLocator(store=store)
    fleet = Fleet(store, locator, SIM_REPLICA_ADDRESS)
    reader, writer = await asyncio.open_unix_connection(opts.socket, limit=2**24)

    def send(msg: dict[str, Any]) -> None:
        writer.write(json.dumps(msg).encode() + b"\n")

    async def report() -> None:
        while True:
            send({"status": fleet.status()})
            await writer.drain()
            await asyncio.sleep(STATUS_S)

    send({"index": opts.index, "pid": os.getpid()})
    fleet.add_nodes([int(i) for i in opts.nodes.split(",") if i], opts.node_lease_ttl)
    reporter = asyncio.get_running_loop().create_task(report())
    stop_id = None
    try:
        while line := await reader.readline():
            msg = json.loads(line)
            if msg["op"] == "stop":
                stop_id = msg["id"]
                break
            send({"id": msg["id"], **answer(fleet, msg)})
    finally:
        reporter.cancel()
        await fleet.close()
        await locator.close()
        await pool.close()
        await store.close()
        if stop_id is not None:
            send({"id": stop_id})
            await writer.drain()
        writer.close()


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.sim_worker")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--etcd", required=True)
    parser.add_argument("--nodes", required=True, help="node indices, comma-separated")
    parser.add_argument("--node-lease-ttl", type=float, default=15.0)
    parser.add_argument("--channels", type=int, default=32)
    opts = parser.parse_args()
    os.environ["WEIR_LOG_LEVEL"] = "warning"  # a thousand sessions: only what goes wrong
    configure_logging("sim_worker")
    asyncio.run(run(opts))


if __name__ == "__main__":
    main()
