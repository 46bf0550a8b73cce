"""A watch on etcd that survives failures, which aetcd's does not.

aetcd's watch ends with an error when its stream breaks (a member dies, etcd fails over,
the network blinks). The controller and the proxies build their view of the cluster from
watches, and a watch that silently stopped, or skipped the changes made while it was
down, would leave them acting on a stale view. :func:`watch_prefix` therefore resumes
from the last revision seen + 1 after any failure, so no event is lost or repeated, and
turns a compaction of that history into a ``"reset"`` event telling the consumer to
re-read everything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import aetcd.rpc
import structlog

from weir.backoff import Backoff
from weir.cancellation import within
from weir.etcd.etcd_connection import EtcdClient, EtcdConnection
from weir.etcd.etcd_failures import being_cancelled, compacted
from weir.etcd.store import StoreError, WatchEvent

__all__ = ["watch_prefix"]

log = structlog.get_logger("weir.etcd.etcd_watch")

_WATCH_BACKOFF_MIN = 0.1
_WATCH_BACKOFF_MAX = 2.0


async def watch_prefix(
    etcd: EtcdConnection, prefix: str, start_revision: int | None = None
) -> AsyncGenerator[WatchEvent, None]:
    """Yield every change under ``prefix`` from ``start_revision`` (default: now on).

    Survives etcd going away: it retries with a small backoff and resumes from the
    last revision seen + 1, so no event is lost or repeated. If that history was
    compacted it yields a ``"reset"`` event and goes on from the current revision.
    Ends when the connection is closed.
    """
    key = prefix.encode()
    next_revision = start_revision
    backoff = Backoff(_WATCH_BACKOFF_MIN, _WATCH_BACKOFF_MAX)
    while not etcd.closed:
        watch = None
        try:
            if next_revision is None:
                # Pin "now" to a revision so a reconnect cannot skip events.
                next_revision = await _current_revision(etcd, prefix) + 1
            client = await etcd.ready()
            with etcd.errors(f"watch {prefix}"):
                watch = await client.watch_prefix(key, start_revision=next_revision)
                if being_cancelled():
                    # Python 3.11's wait_for (inside aetcd) can swallow a cancel that
                    # lands as the watch is created; honour it, or the caller hangs.
                    raise asyncio.CancelledError
                async for event in watch:
                    backoff.reset()
                    revision = int(event.kv.mod_revision)
                    next_revision = revision + 1
                    yield WatchEvent(
                        kind="put" if event.kind == "PUT" else "delete",
                        key=event.kv.key.decode(),
                        value=bytes(event.kv.value),
                        revision=revision,
                    )
        except StoreError as exc:
            if etcd.closed:
                return
            if compacted(exc):
                current = await _current_revision_retrying(etcd, prefix)
                if current is None:
                    return
                log.warning(
                    "watch history compacted; consumer must re-read",
                    prefix=prefix,
                    wanted=next_revision,
                    current=current,
                )
                next_revision = current + 1
                yield WatchEvent(kind="reset", key=prefix, value=b"", revision=current)
                continue
            # The first interruption is news; the retries while etcd is away are not.
            (log.info if backoff.failures == 0 else log.debug)(
                "watch interrupted; resuming",
                prefix=prefix,
                from_revision=next_revision,
                error=str(exc),
            )
            if await etcd.sleep_unless_closed(backoff.next()):
                return
            continue
        finally:
            if watch is not None:
                with contextlib.suppress(Exception):
                    await within(watch.cancel(), etcd.timeout)
        # The stream ended without an error: the store is closing, or aetcd dropped it.
        if etcd.closed:
            return
        if await etcd.sleep_unless_closed(backoff.next()):
            return


async def _current_revision(etcd: EtcdConnection, prefix: str) -> int:
    request = aetcd.rpc.RangeRequest(key=prefix.encode(), limit=1, keys_only=True)

    async def call(client: EtcdClient) -> Any:
        return await client.kvstub.Range(request, timeout=etcd.timeout, metadata=client.metadata)

    response = await etcd.read(f"read revision of {prefix}", call)
    return int(response.header.revision)


async def _current_revision_retrying(etcd: EtcdConnection, prefix: str) -> int | None:
    backoff = Backoff(_WATCH_BACKOFF_MIN, _WATCH_BACKOFF_MAX)
    while not etcd.closed:
        try:
            return await _current_revision(etcd, prefix)
        except StoreError:
            if await etcd.sleep_unless_closed(backoff.next()):
                return None
    return None
