"""The store as one term of leadership writes to it: every write is guarded on the term.

Why. The leader alone writes replica records, and node agents start what the records
say. A leader whose term is over must write nothing: the pass in flight when its lease is
lost, or a loop that outlived its cancel (it happened: docs/scale.md, round 8) would
otherwise place and remove replicas beside the next leader. Each write made through this
store is one etcd transaction guarded on the leader key being the one this term created
(its mod_revision: lease refreshes never change it). Once the key is gone or another's,
the write changes nothing and raises `TermEnded` (a StoreError: callers that retry a
failed write give up the same way, and a replica whose registration it was finds the next
leader). Reads and watches go to the store as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from types import TracebackType

from weir.controller.record_writer import RECORDS_PER_WRITE
from weir.etcd.store import KeyValue, Lease, Store, StoreError, WatchEvent


class TermEnded(StoreError):
    """A write of a term that is over (the leader key is gone or another's): not applied."""


class TermStore:
    """`store` for the term whose leader key `leader_key` was written at `revision`."""

    def __init__(self, store: Store, leader_key: str, revision: int) -> None:
        self._store = store
        self._leader_key = leader_key
        self._revision = revision

    # ------------------------------------------------------------------ writes (guarded)

    async def commit(self, *, puts: Mapping[str, bytes] = {}, deletes: Sequence[str] = (),
                     expect_mod_revision: Mapping[str, int] = {}) -> int | None:
        """`Store.commit`, applied only while this term holds the leader key; TermEnded if
        not, None if only the caller's own guards failed."""
        if self._leader_key in puts or self._leader_key in deletes:
            raise ValueError("a term's writes never touch the leader key")
        revision = await self._store.commit(
            puts=puts, deletes=deletes,
            expect_mod_revision={**expect_mod_revision, self._leader_key: self._revision})
        if revision is None:
            await self._check_term()
        return revision

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        """`Store.put` within this term (TermEnded once it is over); `lease` is not taken."""
        if lease is not None:
            raise ValueError("a term's guarded put takes no lease")
        revision = await self.commit(puts={key: value})
        assert revision is not None  # no guard of the caller's: None means the term ended
        return revision

    async def delete(self, key: str) -> bool:
        """`Store.delete` within this term; whether `key` was there."""
        existed = await self._store.get(key) is not None
        await self.commit(deletes=[key])
        return existed

    async def delete_prefix(self, prefix: str) -> int:
        """`Store.delete_prefix` within this term: the keys there now, RECORDS_PER_WRITE to
        a transaction (etcd takes at most 128 operations in one)."""
        items, _ = await self._store.get_prefix(prefix)
        for i in range(0, len(items), RECORDS_PER_WRITE):
            await self.commit(deletes=[kv.key for kv in items[i:i + RECORDS_PER_WRITE]])
        return len(items)

    async def create_if_absent(self, key: str, value: bytes, *,
                               lease: Lease | None = None) -> bool:
        """`Store.create_if_absent` within this term; `lease` is not taken."""
        if lease is not None:
            raise ValueError("a term's guarded create takes no lease")
        return await self.commit(puts={key: value}, expect_mod_revision={key: 0}) is not None

    async def _check_term(self) -> None:
        """TermEnded if the leader key is no longer this term's."""
        held = await self._store.get(self._leader_key)
        if held is None or held.mod_revision != self._revision:
            raise TermEnded(f"this term of leadership is over ({self._leader_key} is "
                            f"{'gone' if held is None else 'held by another term'}): "
                            "not written")

    # ------------------------------------------------------------------ the rest, as it is

    @property
    def timeout(self) -> float:
        """The store's per-call timeout in seconds."""
        return self._store.timeout

    async def connect(self) -> None:
        await self._store.connect()

    async def close(self) -> None:
        await self._store.close()

    async def __aenter__(self) -> Store:
        await self._store.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._store.close()

    async def get(self, key: str) -> KeyValue | None:
        return await self._store.get(key)

    async def get_prefix(self, prefix: str, *, keys_only: bool = False
                         ) -> tuple[list[KeyValue], int]:
        return await self._store.get_prefix(prefix, keys_only=keys_only)

    async def get_at_revision(self, key: str, revision: int) -> KeyValue | None:
        return await self._store.get_at_revision(key, revision)

    async def grant_lease(self, ttl: float) -> Lease:
        return await self._store.grant_lease(ttl)

    async def revoke_lease(self, lease: Lease) -> None:
        await self._store.revoke_lease(lease)

    def keep_alive(self, lease: Lease, on_lost: Callable[[], None]) -> asyncio.Task[None]:
        return self._store.keep_alive(lease, on_lost)

    def watch_prefix(self, prefix: str, start_revision: int | None = None
                     ) -> AsyncGenerator[WatchEvent, None]:
        return self._store.watch_prefix(prefix, start_revision)
