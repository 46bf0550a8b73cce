"""Route subscribers in a process of their own, for the control-plane scale bench.

A hundred proxies' worth of route streams applying every delta would starve the
simulation's event loops (and its nodes' leases), so the bench runs most subscribers
here. Each is a proxy's own `RouteTableSubscriber`; each records when (wall clock) every
table version reached it. On SIGTERM the records go to `--out` as JSON, and the bench
matches them against the versions its in-process witness saw each change in.

    python -m bench.sim_subscribers --etcd HOST:PORT --count 50 --first 0 --out PATH
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path

from weir.dataplane.route_table import LeaderLocator, RouteTable, RouteTableSubscriber
from weir.etcd.etcd_store import EtcdStore
from weir.runtime import configure_logging


async def run(opts: argparse.Namespace) -> None:
    """Subscribe until SIGTERM, then write what arrived when."""
    store = EtcdStore(opts.etcd)
    await store.connect()
    # The real locator, shared: one watch of the leader key for the subscribers of this
    # process (a proxy holds one for its one subscription).
    locator = LeaderLocator(store=store)
    arrivals: dict[int, list[tuple[int, float]]] = {}

    def on_table(index: int, table: RouteTable) -> None:
        arrivals.setdefault(index, []).append((table.version, time.time()))

    subs = [RouteTableSubscriber(locator, f"proxy:sim-{i}",
                                 lambda t, i=i: on_table(i, t))
            for i in range(opts.first, opts.first + opts.count)]
    for sub in subs:
        sub.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for sub in subs:
        await sub.stop()
    await locator.close()
    await store.close()
    text = json.dumps({str(k): v for k, v in arrivals.items()})
    await asyncio.to_thread(Path(opts.out).write_text, text)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.sim_subscribers")
    parser.add_argument("--etcd", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--out", required=True)
    opts = parser.parse_args()
    configure_logging("sim_subscribers")
    asyncio.run(run(opts))


if __name__ == "__main__":
    main()
