"""Finding a cluster's admin API: a flag, WEIR_ADDRESS, the `weir start` state file, or
etcd's leader key (a machine that joined with no controller of its own)."""

from __future__ import annotations

import asyncio
import os
import threading

from weir.cli.cluster_state import running_cluster
from weir.exceptions import ClusterError


def cluster_address(explicit: str | None = None) -> str | None:
    """Where a cluster's admin API is: `explicit`, else WEIR_ADDRESS, else a running
    `weir start` cluster's controllers (comma-separated); None when none is known."""
    if explicit:
        return explicit
    if os.environ.get("WEIR_ADDRESS"):
        return os.environ["WEIR_ADDRESS"]
    info = running_cluster()
    if info is None:
        return None
    # A machine that joined with no controller of its own asks etcd who leads.
    return info.address or leader_via_etcd(info.etcd_endpoints)


def leader_via_etcd(endpoints: str) -> str:
    """The leader's admin address, read from etcd (on a private thread: the caller may be
    on an event loop)."""
    from weir.dataplane.route_table import LeaderLocator

    found: list[str | None] = [None]

    def lookup() -> None:
        found[0] = asyncio.run(LeaderLocator(endpoints).leader_address())

    thread = threading.Thread(target=lookup, name="weir-leader-lookup")
    thread.start()
    thread.join(10)
    if not found[0]:
        raise ClusterError(f"no Weir controller leads the cluster at etcd {endpoints}")
    return found[0]
