"""The process's cluster context: which cluster it talks to, and its data plane.

A replica sets it at start (its event loop hosts the data plane). A driver script gets it
from `serve.run` or `WEIR_ETCD_ENDPOINTS`/`WEIR_ADDRESS`; its data plane then runs on a
private daemon thread, so that sync code can block on `.result()` while calls progress.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    # Imported where a plane is made: the data plane (grpc stubs, prometheus_client,
    # ~0.14 s) is not needed by processes that only build or describe applications.
    from weir.dataplane.caller import DataPlane

T = TypeVar("T")


@dataclass
class ClusterCoordinates:
    """How to reach a cluster: etcd endpoints (preferred) and/or controller addresses."""

    etcd_endpoints: str = ""
    controllers: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> ClusterCoordinates:
        """From WEIR_ETCD_ENDPOINTS and WEIR_ADDRESS."""
        address = os.environ.get("WEIR_ADDRESS", "")
        return cls(
            etcd_endpoints=os.environ.get("WEIR_ETCD_ENDPOINTS", ""),
            controllers=tuple(a for a in address.split(",") if a),
        )

    def __bool__(self) -> bool:
        return bool(self.etcd_endpoints or self.controllers)


class _Context:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.coordinates: ClusterCoordinates | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.data_plane: DataPlane | None = None
        self.owns_thread = False
        self.subscriber_name = f"handle:{os.getpid()}"


_ctx = _Context()


def set_cluster(coordinates: ClusterCoordinates, *, subscriber: str | None = None) -> None:
    """Point this process at a cluster (drops a data plane bound to another one)."""
    with _ctx.lock:
        if _ctx.coordinates != coordinates:
            _reset_locked()
        _ctx.coordinates = coordinates
        if subscriber:
            _ctx.subscriber_name = subscriber


def cluster() -> ClusterCoordinates:
    """This process's cluster, from `set_cluster` or the environment."""
    with _ctx.lock:
        if _ctx.coordinates is None:
            _ctx.coordinates = ClusterCoordinates.from_env()
        return _ctx.coordinates


def bind_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Host the data plane on an existing loop (a replica's)."""
    with _ctx.lock:
        _ctx.loop = loop
        _ctx.owns_thread = False


def data_plane_loop() -> asyncio.AbstractEventLoop:
    """The loop the data plane runs on, starting a daemon thread for it if needed."""
    with _ctx.lock:
        if _ctx.loop is None or _ctx.loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="weir-data-plane",
                                      daemon=True)
            thread.start()
            _ctx.loop = loop
            _ctx.owns_thread = True
        return _ctx.loop


async def get_data_plane() -> DataPlane:
    """The process's data plane; call on the data plane loop."""
    if _ctx.data_plane is None:
        coords = cluster()
        if not coords:
            from weir.exceptions import ClusterError

            raise ClusterError(
                "no Weir cluster to call: run `serve.run(...)` first, or set WEIR_ADDRESS "
                "(a controller address) or WEIR_ETCD_ENDPOINTS"
            )
        from weir.dataplane.caller import DataPlane
        from weir.dataplane.route_table import LeaderLocator

        plane = DataPlane(LeaderLocator(coords.etcd_endpoints, coords.controllers),
                          _ctx.subscriber_name)
        plane.start()
        _ctx.data_plane = plane
    return _ctx.data_plane


def use_local_plane(plane: Any) -> None:
    """Serve this process's handle calls from `plane`, a `weir.local_testing.LocalPlane`
    (local testing mode), instead of a cluster's data plane."""
    with _ctx.lock:
        _reset_locked()
        # It offers the calls handles make (call, stream, close), not the routing.
        _ctx.data_plane = cast("DataPlane", plane)


def submit(coro: Coroutine[Any, Any, T]) -> Future[T]:
    """Run a coroutine on the data plane loop from any thread."""
    return asyncio.run_coroutine_threadsafe(coro, data_plane_loop())


def _reset_locked() -> None:
    plane, loop, owns = _ctx.data_plane, _ctx.loop, _ctx.owns_thread
    _ctx.data_plane = None
    if owns and loop is not None and not loop.is_closed():
        if plane is not None:
            fut = asyncio.run_coroutine_threadsafe(plane.close(), loop)
            try:
                fut.result(timeout=5)
            except Exception:
                pass
        loop.call_soon_threadsafe(loop.stop)
        _ctx.loop = None


def reset() -> None:
    """Forget the cluster and stop the data plane thread (serve.shutdown)."""
    with _ctx.lock:
        _reset_locked()
        _ctx.coordinates = None
