"""`@serve.batch` in one process: real event loops and threads, no cluster."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cloudpickle
import pytest

from weir import serve
from weir.exceptions import RayServeException


class Model:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.threads: set[str] = set()

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=5)
    async def double(self, items: list[int]) -> list[int]:
        self.sizes.append(len(items))
        return [2 * i for i in items]

    @serve.batch(max_batch_size=3, batch_wait_timeout_s=0.02)
    async def scaled(self, items: list[int], *, by: list[int]) -> list[int]:
        self.sizes.append(len(items))
        return [i * b for i, b in zip(items, by, strict=True)]

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=5)
    async def fails(self, items: list[int]) -> list[int]:
        raise ValueError(f"batch of {len(items)} failed")

    @serve.batch(max_batch_size=2, batch_wait_timeout_s=5)
    async def too_short(self, items: list[int]) -> list[int]:
        return items[:1]

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=5)
    def sync_square(self, items: list[int]) -> list[int]:
        self.sizes.append(len(items))
        self.threads.add(threading.current_thread().name)
        return [i * i for i in items]

    @serve.batch(max_batch_size=3, batch_wait_timeout_s=5)
    async def countdown(self, starts: list[int]) -> AsyncIterator[list[object]]:
        for step in range(3):
            yield [s - step if s - step > 0 else StopIteration for s in starts]


def test_full_batches_go_without_waiting_for_the_timeout() -> None:
    model = Model()

    async def main() -> list[int]:
        return list(await asyncio.wait_for(
            asyncio.gather(*[model.double(i) for i in range(8)]), timeout=2))

    assert asyncio.run(main()) == [2 * i for i in range(8)]
    assert model.sizes == [4, 4]


def test_a_partial_batch_goes_after_the_timeout_with_keyword_arguments() -> None:
    model = Model()

    async def main() -> list[int]:
        return list(await asyncio.gather(*[model.scaled(i, by=10) for i in range(5)]))

    assert asyncio.run(main()) == [0, 10, 20, 30, 40]
    assert model.sizes == [3, 2]


def test_batches_are_per_instance() -> None:
    a, b = Model(), Model()
    a.double.set_max_batch_size(1)
    assert b.double._get_max_batch_size() == 4  # type: ignore[attr-defined]

    async def main() -> None:
        await asyncio.gather(a.double(1), a.double(2), *[b.double(i) for i in range(4)])

    asyncio.run(main())
    assert (a.sizes, b.sizes) == ([1, 1], [4])


def test_an_exception_reaches_every_caller_of_the_batch() -> None:
    model = Model()

    async def main() -> list[BaseException | int]:
        return list(await asyncio.gather(*[model.fails(i) for i in range(4)],
                                         return_exceptions=True))

    errors = asyncio.run(main())
    assert [str(e) for e in errors] == ["batch of 4 failed"] * 4


def test_a_wrong_length_is_an_error_naming_the_function() -> None:
    model = Model()

    async def main() -> list[BaseException | int]:
        return list(await asyncio.gather(model.too_short(1), model.too_short(2),
                                         return_exceptions=True))

    errors = asyncio.run(main())
    assert all(isinstance(e, RayServeException) for e in errors)
    assert "Model.too_short returned 1 results for a batch of 2 inputs" in str(errors[0])


def test_a_cancelled_caller_leaves_its_batch() -> None:
    model = Model()

    async def main() -> list[int]:
        gone = asyncio.ensure_future(model.double(100))
        await asyncio.sleep(0)  # let it enqueue
        gone.cancel()
        return list(await asyncio.gather(*[model.double(i) for i in range(3)]))

    assert asyncio.run(main()) == [0, 2, 4]
    assert model.sizes == [3]


def test_sync_batches_run_in_a_caller_thread() -> None:
    model = Model()
    with ThreadPoolExecutor(8, thread_name_prefix="caller") as pool:
        results = list(pool.map(model.sync_square, range(8)))
    assert results == [i * i for i in range(8)]
    assert model.sizes == [4, 4]
    assert all(name.startswith("caller") for name in model.threads)


def test_sync_batch_refuses_to_block_an_event_loop() -> None:
    model = Model()

    async def main() -> None:
        model.sync_square(3)

    with pytest.raises(TypeError, match="would stall this event loop"):
        asyncio.run(main())


def test_streaming_batches_give_each_caller_its_own_items() -> None:
    model = Model()

    async def collect(start: int) -> list[object]:
        return [item async for item in model.countdown(start)]

    async def main() -> list[list[object]]:
        return list(await asyncio.gather(*[collect(s) for s in (1, 2, 5)]))

    assert asyncio.run(main()) == [[1], [2, 1], [5, 4, 3]]


def test_plain_functions_and_their_setters() -> None:
    sizes: list[int] = []

    @serve.batch(max_batch_size=2, batch_wait_timeout_s=5)
    async def upper(words: list[str]) -> list[str]:
        sizes.append(len(words))
        return [w.upper() for w in words]

    upper.set_max_batch_size(3)

    async def main() -> list[str]:
        return list(await asyncio.gather(*[upper(w) for w in "abc"]))

    assert asyncio.run(main()) == ["A", "B", "C"]
    assert sizes == [3]


def test_a_batched_class_ships_by_value_before_and_after_use() -> None:
    class Local:  # defined in a function: cloudpickle ships it by value, as from a notebook
        @serve.batch(max_batch_size=2, batch_wait_timeout_s=5)
        async def double(self, items: list[int]) -> list[int]:
            return [2 * i for i in items]

    async def use(cls: type[Local]) -> list[int]:
        model = cls()
        return list(await asyncio.wait_for(asyncio.gather(model.double(1), model.double(2)), 2))

    assert asyncio.run(use(Local)) == [2, 4]
    shipped = cloudpickle.loads(cloudpickle.dumps(Local))
    assert asyncio.run(use(shipped)) == [2, 4]


def test_the_decorator_rejects_what_it_cannot_batch() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        serve.batch(max_batch_size=0)
    with pytest.raises(TypeError, match=r"cannot take \*args"):
        serve.batch(lambda *items: items)


def test_batch_size_fn_sees_the_callers_arguments() -> None:
    seen: list[list[object]] = []

    def total_length(items: list[str]) -> int:
        seen.append(list(items))
        return sum(len(s) for s in items)

    class Texts:
        @serve.batch(max_batch_size=6, batch_wait_timeout_s=5, batch_size_fn=total_length)
        async def lengths(self, texts: list[str]) -> list[int]:
            return [len(t) for t in texts]

        @serve.batch(max_batch_size=2, batch_wait_timeout_s=5,
                     batch_size_fn=lambda pairs: len(pairs))
        async def join(self, a: list[str], b: list[str]) -> list[str]:
            return [x + y for x, y in zip(a, b, strict=True)]

    texts = Texts()

    async def main() -> tuple[list[int], list[str]]:
        # "ab" + "cd" + "ef" fill 6 characters: that batch goes at once, without the 5 s wait.
        lengths = await asyncio.wait_for(
            asyncio.gather(*[texts.lengths(t) for t in ("ab", "cd", "ef")]), timeout=2)
        joined = await asyncio.wait_for(
            asyncio.gather(texts.join("a", "b"), texts.join("c", b="d")), timeout=2)
        return list(lengths), list(joined)

    assert asyncio.run(main()) == ([2, 2, 2], ["ab", "cd"])
    assert all(isinstance(item, str) for items in seen for item in items)
    assert seen[-1] == ["ab", "cd", "ef"]


class Multiplexed:
    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=5)
    async def run(self, items: list[int]) -> list[str]:
        model_id = serve.get_multiplexed_model_id()
        self.batches.append((model_id, items))
        return [f"{model_id}:{i}" for i in items]

    @serve.batch(max_batch_size=2, batch_wait_timeout_s=5)
    def run_sync(self, items: list[int]) -> list[str]:
        model_id = serve.get_multiplexed_model_id()
        self.batches.append((model_id, items))
        return [f"{model_id}:{i}" for i in items]


def _as_model(model_id: str, call: Callable[[], Any]) -> Any:
    from weir.runtime_context import RequestContext, serving

    serving(RequestContext(request_id=f"r-{model_id}", multiplexed_model_id=model_id))
    return call()


def test_batches_are_split_by_multiplexed_model_id_as_in_ray() -> None:
    """Calls for models a and b, interleaved, make one full batch each (not two mixed
    ones), and get_multiplexed_model_id() in the batch names its model."""
    model = Multiplexed()

    async def main() -> list[str]:
        async def one(model_id: str, i: int) -> str:
            return await _as_model(model_id, lambda: model.run(i))  # type: ignore[no-any-return]

        calls = [one("ab"[i % 2], i) for i in range(8)]
        return list(await asyncio.wait_for(asyncio.gather(*calls), timeout=2))

    assert asyncio.run(main()) == [f"{'ab'[i % 2]}:{i}" for i in range(8)]
    assert sorted(model.batches) == [("a", [0, 2, 4, 6]), ("b", [1, 3, 5, 7])]
    model.run.set_max_batch_size(2)  # reaches every model's batcher
    assert model.run._get_max_batch_size() == 2
    with pytest.raises(ValueError, match="max_batch_size"):
        model.run.set_max_batch_size(0)


def test_sync_batches_are_split_by_multiplexed_model_id() -> None:
    model = Multiplexed()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(
            lambda i: _as_model("ab"[i % 2], lambda: model.run_sync(i)), range(4)))
    assert results == ["a:0", "b:1", "a:2", "b:3"]
    assert sorted(model.batches) == [("a", [0, 2]), ("b", [1, 3])]
