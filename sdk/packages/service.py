"""Packages over gRPC: the Packages service and its two client calls.

etcd refuses values over 1.5 MiB, so packages travel as streams of 1 MiB chunks (gRPC's
flow control paces them) and etcd holds only their names. The first chunk of a stream
names the package. All file work runs in threads, off the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import structlog

from weir.packages.archive import (
    CHUNK_BYTES,
    MAX_PACKAGE_BYTES,
    PackageCorrupt,
    PackageError,
    PackageNotFound,
    PackageTooLarge,
    check_hash,
    pack,
)
from weir.packages.cache import PackageCache
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc

log = structlog.get_logger("weir.packages")

#: What each refusal is on the wire, and back.
_CODES: dict[type[PackageError], grpc.StatusCode] = {
    PackageTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    PackageCorrupt: grpc.StatusCode.DATA_LOSS,
    PackageNotFound: grpc.StatusCode.NOT_FOUND,
    PackageError: grpc.StatusCode.INVALID_ARGUMENT,
}


def _chunks(package_hash: str, data: bytes) -> Iterator[pb.PackageChunk]:
    for offset in range(0, len(data), CHUNK_BYTES):
        yield pb.PackageChunk(hash=package_hash if offset == 0 else "",
                              data=data[offset:offset + CHUNK_BYTES])


class PackageService(pb_grpc.PackagesServicer):
    """Serves the packages of a PackageCache: Upload stores one, Fetch streams one back."""

    def __init__(self, cache: PackageCache, *, max_bytes: int = MAX_PACKAGE_BYTES) -> None:
        self.cache = cache
        self.max_bytes = max_bytes

    async def Upload(self, request_iterator: AsyncIterator[pb.PackageChunk],
                     context: grpc.aio.ServicerContext) -> pb.PackageRef:
        """Receive a package; the first chunk names its hash."""
        started = time.monotonic()
        first = await anext(aiter(request_iterator), None)
        package_hash = first.hash if first is not None else ""
        try:
            if first is None:
                raise PackageError("an upload sent no chunk; its first chunk must name the "
                                   "package (weir.packages.upload_package does)")
            check_hash(package_hash)
            if self.cache.has(package_hash):
                # Already here: answer at once and leave the rest of the stream unread.
                size = (await asyncio.to_thread(self.cache.archive(package_hash).stat)).st_size
                return pb.PackageRef(hash=package_hash, size=size)
            incoming = await asyncio.to_thread(self.cache.receive, package_hash,
                                               max_bytes=self.max_bytes)
            try:
                await asyncio.to_thread(incoming.write, first.data)
                async for chunk in request_iterator:
                    if chunk.hash and chunk.hash != package_hash:
                        raise PackageCorrupt(f"a chunk of package {package_hash} names "
                                             f"another package, {chunk.hash}")
                    await asyncio.to_thread(incoming.write, chunk.data)
                await asyncio.to_thread(incoming.finish)
            finally:
                # Quick (a few unlinks), and it must run when a cancelled upload unwinds.
                incoming.abort()
        except PackageError as exc:
            log.warning("package refused", hash=package_hash or None, reason=str(exc))
            await context.abort(_code(exc), str(exc))
        log.info("package received", hash=package_hash, size=incoming.size,
                 seconds=round(time.monotonic() - started, 3))
        return pb.PackageRef(hash=package_hash, size=incoming.size)

    async def Fetch(self, request: pb.PackageRef,
                    context: grpc.aio.ServicerContext) -> AsyncIterator[pb.PackageChunk]:
        """Stream a package's zip, 1 MiB a message; NOT_FOUND if it is not here."""
        try:
            if not self.cache.can_serve(request.hash):
                raise PackageNotFound(f"package {request.hash} is not on this server; "
                                      "upload it first")
        except PackageError as exc:
            await context.abort(_code(exc), str(exc))
        src = await asyncio.to_thread(self.cache.archive(request.hash).open, "rb")
        try:
            first = True
            while data := await asyncio.to_thread(src.read, CHUNK_BYTES):
                yield pb.PackageChunk(hash=request.hash if first else "", data=data)
                first = False
        finally:
            src.close()


    async def Stat(self, request: pb.PackageRef,
                   context: grpc.aio.ServicerContext) -> pb.PackageRef:
        """The package's zip size if it is here; NOT_FOUND if not."""
        try:
            if not self.cache.can_serve(request.hash):
                raise PackageNotFound(f"package {request.hash} is not on this server")
        except PackageError as exc:
            await context.abort(_code(exc), str(exc))
        size = (await asyncio.to_thread(self.cache.archive(request.hash).stat)).st_size
        return pb.PackageRef(hash=request.hash, size=size)


def _code(exc: PackageError) -> grpc.StatusCode:
    return next(code for kind, code in _CODES.items() if isinstance(exc, kind))


def _from_rpc(exc: grpc.RpcError) -> Exception:
    """The PackageError a refusal stands for, or the gRPC error itself."""
    call: grpc.Call = exc  # type: ignore[assignment]  # raised errors are also their call
    for kind, code in _CODES.items():
        if call.code() == code:
            return kind(call.details() or str(code))
    return exc


async def upload_package(channel: grpc.aio.Channel, path: Path, *,
                         max_bytes: int = MAX_PACKAGE_BYTES, keep_name: bool = False) -> str:
    """Pack `path` (see `pack`) and upload it; returns its hash. Raises PackageError
    (PackageTooLarge, ...) when it cannot be packed or the server refuses it."""
    package_hash, data = await asyncio.to_thread(pack, path, max_bytes=max_bytes,
                                                 keep_name=keep_name)
    try:
        await pb_grpc.PackagesStub(channel).Upload(_chunks(package_hash, data))
    except grpc.aio.AioRpcError as exc:
        raise _from_rpc(exc) from exc
    return package_hash


async def fetch_package(channel: grpc.aio.Channel, package_hash: str, cache: PackageCache, *,
                        max_bytes: int = MAX_PACKAGE_BYTES) -> Path:
    """The unpacked package, fetched into `cache` unless it is there already. Raises
    PackageNotFound if the server does not have it, PackageCorrupt if what came does not
    match the hash."""
    if await asyncio.to_thread(cache.has, package_hash):
        return cache.path(package_hash)
    incoming = await asyncio.to_thread(cache.receive, package_hash, max_bytes=max_bytes)
    try:
        async for chunk in pb_grpc.PackagesStub(channel).Fetch(pb.PackageRef(hash=package_hash)):
            await asyncio.to_thread(incoming.write, chunk.data)
        return await asyncio.to_thread(incoming.finish)
    except grpc.aio.AioRpcError as exc:
        raise _from_rpc(exc) from exc
    finally:
        # Removing a scratch folder is a few unlinks: quick enough for the event loop, and
        # it must run even when this task is being cancelled.
        incoming.abort()


# --- blocking clients: the CLI and SDK (no event loop), and resolvers in worker threads ----

#: How long one whole transfer may take: 500 MiB at a slow 10 MiB/s, with room to spare.
TRANSFER_TIMEOUT_S = 120.0
#: A Stat is a lookup: an answer past this means the server is unwell.
STAT_TIMEOUT_S = 10.0


def stat_package_blocking(channel: grpc.Channel, package_hash: str) -> int | None:
    """The size of the package's zip on the server, or None if it does not have it.
    Raises grpc.RpcError when the server cannot be asked."""
    try:
        ref = pb_grpc.PackagesStub(channel).Stat(pb.PackageRef(hash=package_hash),
                                                 timeout=STAT_TIMEOUT_S)
    except grpc.RpcError as exc:
        if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    return int(ref.size)


def upload_zip_blocking(channel: grpc.Channel, package_hash: str, data: bytes) -> None:
    """Upload a packed zip (from `pack`). Raises PackageError when the server refuses it,
    grpc.RpcError when it cannot be reached."""
    try:
        pb_grpc.PackagesStub(channel).Upload(_chunks(package_hash, data),
                                             timeout=TRANSFER_TIMEOUT_S)
    except grpc.RpcError as exc:
        raise _from_rpc(exc) from exc


def fetch_package_blocking(channel: grpc.Channel, package_hash: str, cache: PackageCache, *,
                           max_bytes: int = MAX_PACKAGE_BYTES) -> Path:
    """`fetch_package` for a thread with no event loop: the unpacked package, fetched into
    `cache` unless it is there already."""
    if cache.has(package_hash):
        return cache.path(package_hash)
    with cache.receive(package_hash, max_bytes=max_bytes) as incoming:
        try:
            for chunk in pb_grpc.PackagesStub(channel).Fetch(pb.PackageRef(hash=package_hash),
                                                             timeout=TRANSFER_TIMEOUT_S):
                incoming.write(chunk.data)
        except grpc.RpcError as exc:
            raise _from_rpc(exc) from exc
        return incoming.finish()
