"""Keeping an etcd lease alive, which aetcd leaves to its caller.

The leader key and the presence records are bound to leases: while a process lives, its
lease must be refreshed; when it cannot be, the process must learn it no later than etcd
expires the lease, or two controllers could both believe they lead. So
:func:`keep_lease_alive` refreshes every TTL/3 and reports the lease lost when no refresh
succeeded for a whole TTL, counted from when the last good refresh was *sent*.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aetcd.rpc
import structlog

from weir.etcd.etcd_connection import EtcdConnection
from weir.etcd.store import Lease, StoreError, StoreUnavailableError, report_lease_lost

__all__ = ["keep_lease_alive"]

log = structlog.get_logger("weir.etcd.etcd_keep_alive")

_REFRESH_RETRY = 0.2


async def keep_lease_alive(
    etcd: EtcdConnection, lease: Lease, on_lost: Callable[[], None]
) -> None:
    """Refresh ``lease`` every TTL/3 until cancelled, or until it is lost.

    It is lost when no refresh succeeded for a whole TTL (etcd away), when etcd says it is
    gone, or when the connection is closed: then ``on_lost()`` is called once and this
    returns.
    """
    loop = asyncio.get_running_loop()
    interval = lease.ttl / 3
    # Measured from when a refresh was *sent*: etcd restarts the TTL no earlier than
    # that, so giving up at last_ok + ttl is never later than etcd's expiry.
    last_ok = loop.time()
    failures = 0
    reason = ""
    while True:
        remaining = last_ok + lease.ttl - loop.time()
        if remaining <= 0:
            reason = f"no refresh succeeded for {lease.ttl} s"
            break
        sent = loop.time()
        try:
            ttl_left = await _refresh(etcd, lease, timeout=min(etcd.timeout, remaining))
        except StoreError as exc:
            if etcd.closed:
                reason = "the store was closed"
                break
            failures += 1
            # The first failure is news; the retries every 0.2 s that follow are not.
            (log.warning if failures == 1 else log.debug)(
                "lease refresh failed", lease=f"{lease.id:x}", error=str(exc)
            )
            await asyncio.sleep(min(interval, _REFRESH_RETRY))
            continue
        if failures:
            log.info("lease refresh recovered", lease=f"{lease.id:x}", failures=failures)
            failures = 0
        if ttl_left <= 0:
            reason = "etcd says the lease expired"
            break
        last_ok = sent
        await asyncio.sleep(interval)
    report_lease_lost(lease, reason, on_lost, log)


async def _refresh(etcd: EtcdConnection, lease: Lease, timeout: float) -> int:
    client = await etcd.ready()
    with etcd.errors(f"refresh lease {lease.id:x}"):
        request = aetcd.rpc.LeaseKeepAliveRequest(ID=lease.id)
        call = client.leasestub.LeaseKeepAlive(
            iter([request]), timeout=timeout, metadata=client.metadata
        )
        async for reply in call:
            call.cancel()
            return int(reply.TTL)
    raise StoreUnavailableError(
        f"etcd at {etcd.where} is unreachable: lease {lease.id:x} refresh got no reply",
        failover=True,
    )
