"""Real Packages servers on loopback, each in a thread of its own with its own event loop,
for the blocking clients (the CLI's uploads, the node's resolver) to call."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from weir import auth
from weir.packages import PackageCache, PackageService
from weir.protos import weir_pb2_grpc as pb_grpc


class PackageServer:
    """One controller's Packages service over a cache, as a controller serves it."""

    def __init__(self, root: Path, token: str = "") -> None:
        self.cache = PackageCache(root)
        self.token = token
        self.address = ""
        self.calls: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete,
                                        args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = auth.server(token=self.token)
        pb_grpc.add_PackagesServicer_to_server(_Recording(self.cache, self.calls), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.address = f"127.0.0.1:{port}"
        self._ready.set()
        await self._stop.wait()
        await server.stop(None)

    def __enter__(self) -> PackageServer:
        self._thread.start()
        assert self._ready.wait(10), "the package server did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


class _Recording(PackageService):
    """A PackageService that notes each call's name and hash (Upload: the first chunk's)."""

    def __init__(self, cache: PackageCache, calls: list[str]) -> None:
        super().__init__(cache)
        self.calls = calls

    async def Stat(self, request, context):  # type: ignore[no-untyped-def]
        self.calls.append(f"Stat {request.hash[:8]}")
        return await super().Stat(request, context)

    async def Upload(self, request_iterator, context):  # type: ignore[no-untyped-def]
        self.calls.append("Upload")
        return await super().Upload(request_iterator, context)

    async def Fetch(self, request, context):  # type: ignore[no-untyped-def]
        self.calls.append(f"Fetch {request.hash[:8]}")
        async for chunk in super().Fetch(request, context):
            yield chunk


@contextmanager
def package_servers(tmp_path: Path, count: int, token: str = "") -> Iterator[list[PackageServer]]:
    """`count` servers, each with its own cache under `tmp_path`."""
    servers = [PackageServer(tmp_path / f"controller-{i}", token) for i in range(count)]
    started: list[PackageServer] = []
    try:
        for server in servers:
            started.append(server.__enter__())
        yield servers
    finally:
        for server in started:
            server.__exit__(None, None, None)


def dead_address() -> str:
    """A loopback address nothing listens on (connections are refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"
