"""The goal read at every pass: node records parsed again only where they were written."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from weir.controller.cluster_goal import ParsedNodes, read_goal
from weir.etcd.keys import NODES_PREFIX
from weir.etcd.memory_store import MemoryStore
from weir.etcd.records import NodeRecord


def test_a_node_record_is_parsed_again_only_once_written_again() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        n1 = NodeRecord("n1", "127.0.0.1", {"CPU": 8.0}, replicas={"r1": 11})
        n2 = NodeRecord("n2", "127.0.0.2", {"CPU": 8.0})
        for node in (n1, n2):
            await store.put(NODES_PREFIX + node.node_id, node.to_bytes())
        parsed = ParsedNodes()
        first = (await read_goal(store, nodes=parsed)).nodes
        assert first == {"n1": n1, "n2": n2}
        second = (await read_goal(store, nodes=parsed)).nodes
        assert second["n1"] is first["n1"] and second["n2"] is first["n2"]
        moved = replace(n1, replicas={"r2": 12})
        await store.put(NODES_PREFIX + "n1", moved.to_bytes())
        await store.delete(NODES_PREFIX + "n2")
        third = (await read_goal(store, nodes=parsed)).nodes
        assert third == {"n1": moved}
        # Without a memory of the last read, every record is parsed.
        assert (await read_goal(store)).nodes == {"n1": moved}

    asyncio.run(scenario())
