"""Pushing the route table to proxies and handles.

Design. The table is a pure function of the goal and the replicas' reports
(`weir.controller.routing`); this module only moves it. Changes are coalesced: a burst of
reports marks the table dirty once, and at most one table goes out per
PUBLISH_MIN_INTERVAL_S. A slow subscriber never holds up the others: each has a queue of
one, and a newer table replaces the one it has not read yet.

Each replica's multiplexed models (`model_ids`, from its session: None for a replica that
does not multiplex) are added to the table here.

A new leader publishes nothing until every recorded replica has re-registered (or a grace
period passed): proxies keep the previous leader's table meanwhile, so no request sees an
empty table during a failover.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from weir.protos import weir_pb2 as pb

PUBLISH_MIN_INTERVAL_S = 0.05


class RoutePublisher:
    """Holds the current table and its subscribers for one term of leadership."""

    def __init__(self, current_table: Callable[[], pb.RouteTable],
                 adopted: Callable[[], bool], ended: asyncio.Event,
                 model_ids: Callable[[str], Sequence[str] | None] | None = None) -> None:
        self._current_table = current_table
        #: The multiplexed models a replica holds, by replica id (`ReplicaSessions.model_ids`).
        self.model_ids = model_ids
        self._adopted = adopted
        self._ended = ended
        self._dirty = asyncio.Event()
        self._subscribers: set[asyncio.Queue[pb.RouteTable]] = set()
        self.table = pb.RouteTable()
        self.ready = False

    def mark_dirty(self) -> None:
        """Something the table depends on changed."""
        self._dirty.set()

    async def run(self) -> None:
        """Publish on every change until cancelled."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self.ready or self._adopted():
                self.ready = True
                self._publish(with_model_ids(self._current_table(), self.model_ids))
            else:
                self._dirty.set()
            await asyncio.sleep(PUBLISH_MIN_INTERVAL_S)

    def _publish(self, table: pb.RouteTable) -> None:
        table.version = self.table.version
        if table == self.table:
            return
        table.version += 1
        self.table = table
        for queue in list(self._subscribers):
            _offer_latest(queue, table)

    async def watch(self) -> AsyncIterator[pb.RouteTable]:
        """The table now (once ready) and on every change, until this term ends."""
        queue: asyncio.Queue[pb.RouteTable] = asyncio.Queue(maxsize=1)
        self._subscribers.add(queue)
        if self.ready:
            _offer_latest(queue, self.table)
        ended = asyncio.get_running_loop().create_task(self._ended.wait())
        try:
            while not ended.done():
                getter = asyncio.get_running_loop().create_task(queue.get())
                await asyncio.wait({getter, ended}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
        finally:
            ended.cancel()
            self._subscribers.discard(queue)


def with_model_ids(table: pb.RouteTable,
                   model_ids: Callable[[str], Sequence[str] | None] | None) -> pb.RouteTable:
    """The table with each multiplexing replica marked so, and its models filled in."""
    if model_ids is not None:
        for targets in table.deployments:
            for replica in targets.replicas:
                held = model_ids(replica.replica_id)
                if held is not None:
                    replica.multiplexed = True
                    replica.multiplexed_model_ids.extend(held)
    return table


def _offer_latest(queue: asyncio.Queue[pb.RouteTable], table: pb.RouteTable) -> None:
    """Replace whatever the subscriber has not read yet with the newest table."""
    with contextlib.suppress(asyncio.QueueEmpty):
        while True:
            queue.get_nowait()
    queue.put_nowait(table)
