"""The replica's pool of threads for sync user code: results, errors and context travel,
the pool stays within its bound, and a call nobody awaits any more keeps its slot until
its code returns."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from weir.replica.user_threads import UserThreads

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def test_results_errors_and_the_callers_context_travel() -> None:
    async def main() -> None:
        threads = UserThreads(2)
        request_id.set("r7")
        assert await threads.run(lambda a, b: (a + b, request_id.get()), 2, 3) == (5, "r7")
        with pytest.raises(ValueError, match="bad"):
            await threads.run(int, "bad")
        with pytest.raises(RuntimeError, match="StopIteration"):
            await threads.run(next, iter(()))
        assert threads.busy == 0
        threads.shutdown()

    asyncio.run(main())


def test_no_more_threads_than_the_bound() -> None:
    async def main() -> set[str]:
        threads = UserThreads(3)
        names: set[str] = set()

        def work() -> None:
            names.add(threading.current_thread().name)
            time.sleep(0.01)

        await asyncio.gather(*(threads.run(work) for _ in range(20)))
        threads.shutdown()
        return names

    names = asyncio.run(main())
    assert 1 <= len(names) <= 3


def test_an_abandoned_call_holds_its_thread_until_it_returns() -> None:
    async def main() -> None:
        threads = UserThreads(1)
        release = threading.Event()
        ran: list[str] = []
        running = threads.run(lambda: (release.wait(10), ran.append("first")))
        queued = threads.run(ran.append, "second")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(running), 0.05)
        running.cancel()
        queued.cancel()  # not started yet: it never runs
        assert threads.busy == 2
        release.set()
        deadline = time.monotonic() + 5
        while threads.busy and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert threads.busy == 0
        assert ran == ["first"]
        threads.shutdown()

    asyncio.run(main())


def test_shutdown_cancels_the_calls_still_queued() -> None:
    async def main() -> None:
        threads = UserThreads(1)
        started, release = threading.Event(), threading.Event()
        running = threads.run(lambda: (started.set(), release.wait(10))[1])
        queued = threads.run(lambda: "never")
        assert await asyncio.to_thread(started.wait, 5)
        threads.shutdown()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert await running is True
        with pytest.raises(RuntimeError, match="shut down"):
            threads.run(lambda: None)

    asyncio.run(main())
