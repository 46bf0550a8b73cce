"""Helpers for tests that run on an event loop: waiting on a condition with a deadline, and
a real gRPC server on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc


async def until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Poll `predicate` on the running loop until it holds; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def loopback_server(add_servicer: Callable[[Any, grpc.aio.Server], None],
                          servicer: Any) -> tuple[grpc.aio.Server, int]:
    """A started grpc.aio server on 127.0.0.1 serving `servicer` (added by `add_servicer`,
    e.g. `add_ControllerServicer_to_server`), and its port. The caller stops it."""
    server = grpc.aio.server()
    add_servicer(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port
