"""weir.controller.term_store: a term's writes apply only while it holds the leader key.

On the in-memory store, and once against a real etcd (the guard is an etcd transaction).
"""

from __future__ import annotations

import asyncio

import pytest

from weir.controller.election import Election
from weir.controller.term_store import TermEnded, TermStore
from weir.etcd.etcd_store import EtcdStore
from weir.etcd.keys import LEADER_KEY
from weir.etcd.memory_store import MemoryStore
from weir.etcd.server import EtcdServer
from weir.etcd.store import Store


async def _term(store: Store) -> TermStore:
    """A term won with a real election on `store`."""
    election = Election(store, b"me", ttl=5)
    await election.campaign()
    return TermStore(store, LEADER_KEY, election.term_revision)


async def _writes_stop_with_the_term(store: Store) -> None:
    term = await _term(store)
    await term.put("/weir/replicas/a", b"1")
    assert await term.create_if_absent("/weir/replicas/b", b"2")
    assert not await term.create_if_absent("/weir/replicas/b", b"3")  # its own guard: None
    kv = await store.get("/weir/replicas/a")
    assert kv is not None
    assert await term.commit(puts={"/weir/replicas/a": b"4"},
                             expect_mod_revision={"/weir/replicas/a": kv.mod_revision})
    assert await term.commit(puts={"/weir/replicas/a": b"5"},
                             expect_mod_revision={"/weir/replicas/a": kv.mod_revision}) is None
    assert await term.delete("/weir/replicas/b")
    for i in range(130):  # more than one transaction takes
        await term.put(f"/weir/events/{i:03}", b"e")
    assert await term.delete_prefix("/weir/events/") == 130
    assert (await store.get_prefix("/weir/events/"))[0] == []
    # The term ends: its lease is gone, and the key with it.
    held = await store.get(LEADER_KEY)
    assert held is not None
    await store.delete(LEADER_KEY)
    with pytest.raises(TermEnded, match="is gone"):
        await term.put("/weir/replicas/c", b"6")
    with pytest.raises(TermEnded):
        await term.commit(deletes=["/weir/replicas/a"])
    with pytest.raises(TermEnded):
        await term.create_if_absent("/weir/replicas/d", b"7")
    # Another term's key is not this term's.
    await store.put(LEADER_KEY, b"someone else")
    with pytest.raises(TermEnded, match="another term"):
        await term.put("/weir/replicas/c", b"6")
    assert await store.get("/weir/replicas/c") is None
    assert await store.get("/weir/replicas/d") is None
    a = await store.get("/weir/replicas/a")
    assert a is not None and a.value == b"4"
    with pytest.raises(ValueError, match="leader key"):
        await term.commit(deletes=[LEADER_KEY])


def test_writes_stop_with_the_term_in_memory() -> None:
    asyncio.run(_writes_stop_with_the_term(MemoryStore()))


def test_writes_stop_with_the_term_on_etcd(etcd_server: EtcdServer) -> None:
    async def main() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            await _writes_stop_with_the_term(store)

    asyncio.run(main())
