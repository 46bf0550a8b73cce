"""Presence: a key in etcd that says a process is alive, for `weir status` to list.

The key is bound to a lease kept alive while the process runs, so a process that dies
vanishes from the listing within the lease's TTL. When etcd goes away long enough for the
lease to expire, the key is put back, under a new lease, as soon as etcd returns.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from weir.cancellation import cancel_all
from weir.etcd.store import Lease, Store, StoreError

log = structlog.get_logger("weir.etcd.presence")

#: How long to wait before trying again while etcd is away.
RETRY_S = 0.5


class Presence:
    """Keeps `key` = `value` in etcd, bound to a lease of `ttl` seconds, until withdrawn."""

    def __init__(self, store: Store, key: str, value: bytes, ttl: float) -> None:
        self.store = store
        self.key = key
        self.value = value
        self.ttl = ttl
        self._lease: Lease | None = None
        self._task: asyncio.Task[None] | None = None
        self.registered = asyncio.Event()

    def start(self) -> None:
        """Register in the background, and again whenever the lease is lost."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            keeper: asyncio.Task[None] | None = None
            try:
                lease = await self.store.grant_lease(self.ttl)
                self._lease = lease
                lost = asyncio.Event()
                keeper = self.store.keep_alive(lease, lost.set)
                await self.store.put(self.key, self.value, lease=lease)
                self.registered.set()
                await lost.wait()
                self.registered.clear()
                log.warning("presence lease lost; registering again", key=self.key)
            except StoreError as exc:
                log.debug("cannot register yet", key=self.key, error=str(exc))
            finally:
                if keeper is not None:
                    keeper.cancel()  # a lease that holds no key must not be kept alive
            await asyncio.sleep(RETRY_S)

    async def update(self, value: bytes) -> bool:
        """Change the value: put at once under the current lease (and on every
        re-registration after). False if etcd did not take it now: call again."""
        self.value = value
        if self._lease is None or not self.registered.is_set():
            return False
        try:
            await self.store.put(self.key, value, lease=self._lease)
        except StoreError as exc:
            log.debug("cannot update presence yet", key=self.key, error=str(exc))
            return False
        return True

    async def withdraw(self) -> None:
        """Stop re-registering and remove the key at once (etcd permitting)."""
        if self._task is not None:
            await cancel_all([self._task])
        if self._lease is not None:
            with contextlib.suppress(StoreError):
                await self.store.revoke_lease(self._lease)
