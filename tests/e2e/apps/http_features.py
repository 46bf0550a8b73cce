"""Apps and middlewares for the HTTP features tests (tests/e2e/test_http_features.py)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from weir import serve
from weir.handle import DeploymentHandle

#: How long a streaming handler waits for the client's go-ahead before giving up.
RELEASE_WAIT_S = 10.0


class TagMiddleware:
    """A pure ASGI middleware adding `x-weir-tag: config` to every response."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message,
                           "headers": [*message.get("headers", []), (b"x-weir-tag", b"config")]}
            await send(message)

        await self.app(scope, receive, tagged)


#: A starlette Middleware object by import path: it carries its own options.
cors_for_example = Middleware(CORSMiddleware, allow_origins=["https://example.com"],
                              allow_methods=["GET"])


@serve.deployment(num_replicas=1, max_ongoing_requests=10, max_queued_requests=100)
class Features:
    """One replica exercising methods, concurrency, bodies and streaming."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.threads: set[str] = set()
        self.releases: dict[str, threading.Event] = {}
        #: Streamed bodies by the client's key: bytes received so far and how it ended.
        self.bodies: dict[str, dict[str, Any]] = {}

    def __call__(self, request: Request) -> str:
        return "called __call__"

    def other(self, request: Request) -> str:
        return f"called other with {request.method}"

    async def sleep_async(self, request: Request) -> str:
        await asyncio.sleep(0.5)
        return "slept"

    def sleep_sync(self, request: Request) -> str:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.threads.add(threading.current_thread().name)
        try:
            time.sleep(0.5)  # user code blocking in its pool thread, on purpose
        finally:
            with self.lock:
                self.active -= 1
        return "slept"

    def sync_stats(self, request: Request) -> dict[str, Any]:
        with self.lock:
            return {"peak": self.peak, "threads": sorted(self.threads)}

    async def echo(self, request: Request) -> Response:
        body = await request.body()
        return Response(body, media_type="application/octet-stream",
                        headers={"x-sha256": hashlib.sha256(body).hexdigest()})

    async def stream_times(self, request: Request) -> dict[str, Any]:
        """Read the body with `request.stream()`; return when each chunk came (monotonic
        clock, system-wide on Linux, so the client on the same host can compare)."""
        seen = self.bodies[request.query_params["key"]] = {
            "received": 0, "state": "reading", "times": []}
        try:
            async for chunk in request.stream():
                if chunk:
                    seen["received"] += len(chunk)
                    seen["times"].append(time.monotonic())
        except (asyncio.CancelledError, ClientDisconnect):
            seen["state"] = "cancelled"
            raise
        seen["state"] = "done"
        return seen

    def body_progress(self, request: Request) -> dict[str, Any]:
        """What `stream_times` has seen of the body sent with this key so far."""
        return self.bodies.get(request.query_params["key"], {"received": 0, "state": "none"})

    def _release_event(self, key: str) -> threading.Event:
        with self.lock:
            return self.releases.setdefault(key, threading.Event())

    def release(self, request: Request) -> str:
        self._release_event(request.query_params["key"]).set()
        return "released"

    def sync_stream(self, request: Request) -> Iterator[str]:
        event = self._release_event(request.query_params["key"])
        yield "first\n"
        yield "second\n" if event.wait(RELEASE_WAIT_S) else "gave up\n"

    async def async_stream(self, request: Request) -> AsyncIterator[str]:
        yield "first\n"
        yield await self._after_release(request.query_params["key"])

    def starlette_stream(self, request: Request) -> StreamingResponse:
        key = request.query_params["key"]

        async def chunks() -> AsyncIterator[bytes]:
            yield b"first\n"
            yield (await self._after_release(key)).encode()

        return StreamingResponse(chunks(), media_type="text/plain",
                                 headers={"x-kind": "starlette"})

    async def _after_release(self, key: str) -> str:
        event = self._release_event(key)
        released = await asyncio.get_running_loop().run_in_executor(
            None, event.wait, RELEASE_WAIT_S)
        return "second\n" if released else "gave up\n"


features = Features.bind()


@serve.deployment
class Adder:
    """Adds a constant."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, x: int) -> int:
        return x + self.n


@serve.deployment
class Nested:
    """Holds handles nested in lists, dicts and tuples of its constructor arguments."""

    def __init__(self, parts: dict[str, Any], extra: list[Any]) -> None:
        self.handles: list[DeploymentHandle] = [
            *parts["list"], parts["named"]["ten"], parts["deep"][0]["inner"][0], *extra]
        assert all(isinstance(h, DeploymentHandle) for h in self.handles)

    async def __call__(self, request: Request) -> list[int]:
        x = int(request.query_params["x"])
        return list(await asyncio.gather(*(h.remote(x) for h in self.handles)))


nested = Nested.bind(
    {"list": [Adder.bind(1), Adder.bind(2)], "named": {"ten": Adder.bind(10)},
     "deep": [{"inner": (Adder.bind(100),)}]},
    [Adder.bind(1000)])
