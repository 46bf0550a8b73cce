"""Model multiplexing in one process: the per-replica LRU of `@serve.multiplexed`, and how
a request names its model. Real event loops, no cluster."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest

from weir import multiplex, serve
from weir.multiplex import ModelCache, request_model_id
from weir.protos import weir_pb2 as pb
from weir.runtime_context import RequestContext, serving


class Model:
    """A model that records its cleanup."""

    def __init__(self, model_id: str, log: list[str]) -> None:
        self.model_id = model_id
        self.log = log

    def __del__(self) -> None:
        self.log.append(f"del {self.model_id}")


class AsyncModel(Model):
    async def __del__(self) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        self.log.append(f"async del {self.model_id}")


def test_least_recently_used_model_is_evicted_and_its_del_called_once() -> None:
    log: list[str] = []

    async def load(model_id: str) -> Model:
        log.append(f"load {model_id}")
        return Model(model_id, log)

    async def scenario() -> ModelCache:
        cache = ModelCache(load, capacity=2)
        await cache.get("a")
        await cache.get("b")
        await cache.get("a")  # now b is the least recently used
        await cache.get("c")
        assert cache.loaded() == ["a", "c"]
        await cache.get("d")
        assert cache.loaded() == ["c", "d"]
        return cache

    cache = asyncio.run(scenario())
    assert log == ["load a", "load b", "del b", "load c", "del a", "load d"]
    del cache
    gc.collect()
    # Freed models keep their __del__ from running a second time; the held ones run once.
    assert log.count("del a") == log.count("del b") == 1
    assert log.count("del c") == log.count("del d") == 1


def test_async_del_is_awaited_on_eviction() -> None:
    log: list[str] = []

    async def load(model_id: str) -> Model:
        return AsyncModel(model_id, log)

    async def scenario() -> None:
        cache = ModelCache(load, capacity=1)
        await cache.get("a")
        await cache.get("b")
        assert log == ["async del a"]
        await cache.clear()  # as a replica does when it stops
        assert log == ["async del a", "async del b"]

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        asyncio.run(scenario())
        gc.collect()
    # Python's finalizer would call the async __del__ again, and never await it.
    assert [str(w.message) for w in seen if "never awaited" in str(w.message)] == []


def test_concurrent_calls_for_one_model_load_it_once() -> None:
    loads: list[str] = []
    release = asyncio.Event

    async def scenario() -> None:
        gate = release()

        async def load(model_id: str) -> str:
            loads.append(model_id)
            await gate.wait()
            return model_id.upper()

        cache = ModelCache(load, capacity=2)
        calls = [asyncio.ensure_future(cache.get("a")) for _ in range(5)]
        await asyncio.sleep(0.01)
        assert cache.model_ids() == {"a"}  # reported while loading
        gate.set()
        assert await asyncio.gather(*calls) == ["A"] * 5

    asyncio.run(scenario())
    assert loads == ["a"]


def test_a_failed_load_leaves_nothing_and_is_retried() -> None:
    attempts: list[str] = []
    changes: list[set[str]] = []

    async def load(model_id: str) -> str:
        attempts.append(model_id)
        if len(attempts) == 1:
            raise OSError("bucket unreachable")
        return model_id

    async def scenario() -> None:
        cache = ModelCache(load, capacity=2)
        cache._on_change = lambda: changes.append(cache.model_ids())
        with pytest.raises(OSError, match="bucket unreachable"):
            await cache.get("a")
        assert cache.model_ids() == set()
        assert await cache.get("a") == "a"
        assert cache.model_ids() == {"a"}

    asyncio.run(scenario())
    assert changes[0] == {"a"} and changes[1] == set() and changes[-1] == {"a"}


def test_no_limit_and_bad_limits() -> None:
    async def load(model_id: str) -> str:
        return model_id

    async def scenario() -> list[str]:
        cache = ModelCache(load, capacity=-1)
        for i in range(10):
            await cache.get(str(i))
        return cache.loaded()

    assert len(asyncio.run(scenario())) == 10
    for bad in (0, -2, 1.5, True, "3"):
        with pytest.raises(ValueError, match="max_num_models_per_replica"):
            serve.multiplexed(max_num_models_per_replica=bad)  # type: ignore[arg-type]


def test_bad_model_ids() -> None:
    async def load(model_id: str) -> str:
        return model_id

    async def scenario() -> None:
        cache = ModelCache(load, capacity=1)
        with pytest.raises(TypeError, match="must be a str"):
            await cache.get(3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="serve_multiplexed_model_id"):
            await cache.get("")

    asyncio.run(scenario())


class Inferencer:
    def __init__(self) -> None:
        self.loaded: list[str] = []

    @serve.multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id: str) -> str:
        self.loaded.append(model_id)
        return f"model {model_id}"

    async def __call__(self) -> str:
        return await self.get_model(serve.get_multiplexed_model_id())


def test_decorated_method_caches_per_instance_and_reports_held_models() -> None:
    changes: list[list[str]] = []
    multiplex.watch_models(lambda: changes.append(multiplex.held_model_ids()))

    async def scenario() -> None:
        first, second = Inferencer(), Inferencer()
        serving(RequestContext(multiplexed_model_id="m1"))
        assert await first() == "model m1"
        assert await first() == "model m1"
        assert await second.get_model("m2") == "model m2"
        assert first.loaded == ["m1"] and second.loaded == ["m2"]
        assert {"m1", "m2"} <= set(multiplex.held_model_ids())
        await multiplex.release_all()
        assert not {"m1", "m2"} & set(multiplex.held_model_ids())

    try:
        asyncio.run(scenario())
    finally:
        multiplex._watchers.clear()
    assert any("m1" in ids for ids in changes)


def test_decorator_refuses_what_ray_refuses() -> None:
    with pytest.raises(TypeError, match="async function"):
        @serve.multiplexed
        def sync_loader(model_id: str) -> str:
            return model_id

    with pytest.raises(TypeError, match="takes 3 parameters"):
        @serve.multiplexed
        async def too_many(self: object, model_id: str, extra: int) -> str:
            return model_id

    @serve.multiplexed
    async def plain(model_id: str) -> str:
        return model_id * 2

    assert asyncio.run(plain("ab")) == "abab"
    assert serve.get_multiplexed_model_id() == ""


def test_request_model_id_from_each_ingress() -> None:
    def header(name: bytes, value: bytes) -> pb.Header:
        return pb.Header(name=name, value=value)

    http = pb.CallRequest(http=pb.HttpRequest(headers=[
        header(b"accept", b"*/*"), header(b"serve_multiplexed_model_id", b"m1")]))
    dashed = pb.CallRequest(http=pb.HttpRequest(headers=[
        header(b"serve-multiplexed-model-id", b"m2")]))
    grpc = pb.CallRequest(grpc=pb.GrpcRequest(metadata=[
        header(b"application", b"app"), header(b"multiplexed_model_id", b"m3")]))
    handle = pb.CallRequest(pickled_args=b"x", multiplexed_model_id="m4")
    assert [request_model_id(r) for r in (http, dashed, grpc, handle)] == ["m1", "m2", "m3",
                                                                          "m4"]
    assert request_model_id(pb.CallRequest(http=pb.HttpRequest())) == ""
    newer = pb.CallRequest(http=pb.HttpRequest(headers=[
        header(b"ray_serve_multiplexed_model_id", b"m5")]))
    assert request_model_id(newer) == "m5"  # the header Ray's newer docs show


class Picky:
    """A model class that refuses to be subclassed."""

    def __init_subclass__(cls) -> None:
        raise RuntimeError("no subclasses")

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def __del__(self) -> None:
        self.log.append("del")


def test_an_eviction_stands_when_the_model_class_refuses_subclasses() -> None:
    log: list[str] = []

    async def load(model_id: str) -> Picky:
        return Picky(log)

    async def scenario() -> list[str]:
        cache = ModelCache(load, capacity=1)
        await cache.get("a")
        await cache.get("b")
        return cache.loaded()

    assert asyncio.run(scenario()) == ["b"]
    assert log[:1] == ["del"]
