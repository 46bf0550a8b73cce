"""Keeping an etcd lease alive, which aetcd leaves to its caller.

The leader key and the presence records are bound to leases: while a process lives, its
lease must be refreshed; when it cannot be, the process must learn it no later than etcd
expires the lease, or two controllers could both believe they lead. So
:func:`keep_lease_alive` refreshes every TTL/3 and reports the lease lost when no refresh
succeeded for a whole TTL, counted from when the last good refresh was *sent*.

The refreshes run in a thread of their own, on their own event loop and connection
(:func:`keep_lease_alive_apart`): the caller's loop may be held by seconds of work (a leader's
reconcile pass over thousands of replicas), and a refresh waiting behind it let the 3 s
leader lease lapse in the middle of a rolling update. Only the verdict, lost or not, comes
back to the caller's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import aetcd.rpc
import structlog

from weir.etcd.etcd_connection import EtcdConnection
from weir.etcd.store import Lease, StoreError, StoreUnavailableError, report_lease_lost

__all__ = ["keep_lease_alive", "keep_lease_alive_apart"]

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
    report_lease_lost(lease, await _refresh_until_lost(etcd, lease), on_lost, log)


async def keep_lease_alive_apart(
    etcd: EtcdConnection, lease: Lease, on_lost: Callable[[], None]
) -> None:
    """:func:`keep_lease_alive`, with the refreshes in a thread of their own on a twin of
    ``etcd`` (same endpoints, TLS and user), so that nothing on this loop delays them.

    ``on_lost()`` is called on this loop; closing ``etcd`` counts as losing the lease, as it
    does for :func:`keep_lease_alive`. Cancel to stop refreshing: the thread ends within a
    moment, its connection closed.
    """
    loop = asyncio.get_running_loop()
    inner = asyncio.new_event_loop()
    refreshing = inner.create_task(_refresh_apart(etcd.twin(), lease))
    verdict: asyncio.Future[str | None] = loop.create_future()

    def settle(reason: str | None) -> None:
        if not verdict.done():
            verdict.set_result(reason)

    def run() -> None:
        reason = None
        try:
            reason = inner.run_until_complete(refreshing)
        except BaseException:  # cancelled (stopped), or the loop died: no verdict
            reason = None
        finally:
            inner.close()
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed already
            loop.call_soon_threadsafe(settle, reason)

    def stop() -> None:
        with contextlib.suppress(RuntimeError):  # the thread's loop is closed already
            inner.call_soon_threadsafe(refreshing.cancel)

    threading.Thread(target=run, name=f"weir-lease-{lease.id:x}", daemon=True).start()
    closed = loop.create_task(etcd.wait_closed())
    try:
        waiters: set[asyncio.Future[Any]] = {verdict, closed}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closed.cancel()
        if not verdict.done():
            stop()
    reason = verdict.result() if verdict.done() else "the store was closed"
    if reason is not None:
        report_lease_lost(lease, reason, on_lost, log)


async def _refresh_apart(etcd: EtcdConnection, lease: Lease) -> str:
    try:
        return await _refresh_until_lost(etcd, lease)
    finally:
        await etcd.close()


async def _refresh_until_lost(etcd: EtcdConnection, lease: Lease) -> str:
    """Refresh every TTL/3 until the lease is lost; why it was."""
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
    return reason


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
