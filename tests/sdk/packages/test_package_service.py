"""Packages over a real in-process gRPC server on loopback."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from tests.sdk.packages.trees import files_of, make_tree
from weir.packages import (
    CHUNK_BYTES,
    PackageCache,
    PackageNotFound,
    PackageService,
    PackageTooLarge,
    fetch_package,
    pack,
    upload_package,
)
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc


def with_server(test: Callable[[grpc.aio.Channel, PackageService], Awaitable[None]],
                cache_root: Path, **options: int) -> None:
    """Run `test` against a real PackageService on loopback."""
    async def main() -> None:
        service = PackageService(PackageCache(cache_root), **options)
        server = grpc.aio.server()
        pb_grpc.add_PackagesServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await test(channel, service)
        finally:
            await server.stop(None)
    asyncio.run(main())


def test_upload_then_fetch_a_package_of_several_chunks(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "a", big=2 * CHUNK_BYTES + 12345)

    async def test(channel: grpc.aio.Channel, service: PackageService) -> None:
        package_hash = await upload_package(channel, root)
        assert service.cache.has(package_hash)
        size = service.cache.archive(package_hash).stat().st_size
        assert size > 2 * CHUNK_BYTES
        chunks = [c async for c in pb_grpc.PackagesStub(channel).Fetch(
            pb.PackageRef(hash=package_hash))]
        assert [len(c.data) for c in chunks] == [CHUNK_BYTES, CHUNK_BYTES, size - 2 * CHUNK_BYTES]
        assert [c.hash for c in chunks] == [package_hash, "", ""]
        node_cache = PackageCache(tmp_path / "node")
        path = await fetch_package(channel, package_hash, node_cache)
        assert files_of(path) == files_of(service.cache.path(package_hash))
        assert files_of(path)["data.bin"] == files_of(root)["data.bin"]
        # A second upload of the same content is answered without receiving it again.
        def receive_again(*args: object, **kwargs: object) -> None:
            raise AssertionError("received a package the server has")
        monkeypatch.setattr(service.cache, "receive", receive_again)
        assert await upload_package(channel, root) == package_hash

    with_server(test, tmp_path / "server")


def test_an_upload_cut_short_leaves_nothing(tmp_path: Path) -> None:
    package_hash, data = pack(make_tree(tmp_path / "a", big=CHUNK_BYTES))

    async def test(channel: grpc.aio.Channel, service: PackageService) -> None:
        sent = asyncio.Event()

        async def chunks() -> AsyncIterator[pb.PackageChunk]:
            yield pb.PackageChunk(hash=package_hash, data=data[:CHUNK_BYTES])
            sent.set()
            await asyncio.Event().wait()  # the client goes quiet, then gives up

        call = pb_grpc.PackagesStub(channel).Upload(chunks())
        await sent.wait()
        await poll(lambda: any(service.cache.root.glob(".partial-*/package.zip")))
        call.cancel()
        await poll(lambda: service.cache.root.is_dir() and not any(service.cache.root.iterdir()))
        assert not service.cache.has(package_hash)

    with_server(test, tmp_path / "server")


async def poll(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_upload_with_a_wrong_hash_is_refused(tmp_path: Path) -> None:
    package_hash, data = pack(make_tree(tmp_path / "a"))
    wrong = "f" * 64

    async def test(channel: grpc.aio.Channel, service: PackageService) -> None:
        async def chunks() -> AsyncIterator[pb.PackageChunk]:
            yield pb.PackageChunk(hash=wrong, data=data)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pb_grpc.PackagesStub(channel).Upload(chunks())
        assert refused.value.code() == grpc.StatusCode.DATA_LOSS
        assert f"its content hashes to {package_hash}" in (refused.value.details() or "")
        assert not service.cache.has(wrong)
        assert list(service.cache.root.iterdir()) == []

    with_server(test, tmp_path / "server")


def test_an_upload_must_name_its_package(tmp_path: Path) -> None:
    async def test(channel: grpc.aio.Channel, service: PackageService) -> None:
        async def nothing() -> AsyncIterator[pb.PackageChunk]:
            return
            yield
        async def unnamed() -> AsyncIterator[pb.PackageChunk]:
            yield pb.PackageChunk(hash="../../etc", data=b"x")
        for chunks, says in ((nothing, "an upload sent no chunk"),
                             (unnamed, "not 64 lowercase hex digits")):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await pb_grpc.PackagesStub(channel).Upload(chunks())
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert says in (refused.value.details() or "")

    with_server(test, tmp_path / "server")


def test_fetching_an_unknown_package_is_not_found(tmp_path: Path) -> None:
    async def test(channel: grpc.aio.Channel, service: PackageService) -> None:
        unknown = "a" * 64
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in pb_grpc.PackagesStub(channel).Fetch(pb.PackageRef(hash=unknown)):
                pass
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        node_cache = PackageCache(tmp_path / "node")
        with pytest.raises(PackageNotFound, match=f"package {unknown} is not on this server"):
            await fetch_package(channel, unknown, node_cache)
        assert not node_cache.has(unknown)
        assert list(node_cache.root.iterdir()) == []

    with_server(test, tmp_path / "server")


def test_a_cache_shared_with_a_node_fetches_again_what_the_node_lost(tmp_path: Path) -> None:
    # An embedded cluster's controller and node agent share one cache: if the unpacked
    # folder goes, the controller still serves the zip it kept, and the node unpacks it anew.
    root = make_tree(tmp_path / "a")

    async def test(channel: grpc.aio.Channel, service: PackageService) -> None:
        package_hash = await upload_package(channel, root)
        before = files_of(service.cache.path(package_hash))
        shutil.rmtree(service.cache.path(package_hash))
        assert not service.cache.has(package_hash) and service.cache.can_serve(package_hash)
        path = await fetch_package(channel, package_hash, service.cache)
        assert files_of(path) == before

    with_server(test, tmp_path / "server")


def test_the_server_refuses_a_package_over_its_limit(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a", big=3 * CHUNK_BYTES)

    async def test(channel: grpc.aio.Channel, service: PackageService) -> None:
        with pytest.raises(PackageTooLarge, match=r"over the limit of 2\.0 MiB"):
            await upload_package(channel, root)  # the client's own limit is 500 MiB
        assert list(service.cache.root.iterdir()) == []

    with_server(test, tmp_path / "server", max_bytes=2 * CHUNK_BYTES)
