"""weir.cancellation: waits with a deadline that never lose a cancellation, and stopping
tasks that lost one.

The race under test: the caller is cancelled in the same event-loop turn as the thing it
awaits completes. `asyncio.wait_for` before Python 3.12 returns the result then, and a
loop around it runs on after `cancel()`; the first test shows that on the running Python
(it is skipped where `wait_for` was fixed), the others that `within`, `event_within` and
`cancel_all` end such a loop.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from weir.cancellation import cancel_all, event_within, within, within_by_wait

Within = Callable[[Awaitable[Any], float], Awaitable[Any]]
#: Both ways `within` works: asyncio.timeout (3.11+) and asyncio.wait (3.10).
WITHINS = pytest.mark.parametrize("within_", [within, within_by_wait],
                                  ids=["within", "within_by_wait"])


async def _woken_loop(wait: Callable[[asyncio.Event], Awaitable[object]],
                      event: asyncio.Event, passes: list[int]) -> None:
    """A loop like the leader's: wait for a wake (or a timeout), do a pass, again."""
    while True:
        await wait(event)
        event.clear()
        passes.append(1)


async def _cancel_as_woken(wait: Callable[[asyncio.Event], Awaitable[object]]
                           ) -> tuple[asyncio.Task[None], list[int]]:
    """Start the loop, then wake it and cancel it in the same turn; the task, after the
    loop had one more turn to end, and the passes it made."""
    event, passes = asyncio.Event(), []
    task = asyncio.get_running_loop().create_task(_woken_loop(wait, event, passes))
    await asyncio.sleep(0)  # the loop is waiting
    event.set()
    task.cancel()
    await asyncio.wait((task,), timeout=0.5)
    return task, passes


async def _wait_for(event: asyncio.Event) -> None:
    try:
        await asyncio.wait_for(event.wait(), 10)
    except TimeoutError:
        pass


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps the cancel on 3.12+")
def test_wait_for_loses_a_cancel_that_comes_as_the_event_is_set() -> None:
    async def main() -> None:
        task, passes = await _cancel_as_woken(_wait_for)
        assert not task.done(), "wait_for kept the cancellation here: the race is gone"
        assert passes  # it ran on past the cancel
        await cancel_all([task])
        assert task.cancelled()

    asyncio.run(main())


def test_event_within_keeps_the_cancel() -> None:
    async def main() -> None:
        task, passes = await _cancel_as_woken(lambda e: event_within(e, 10))
        assert task.cancelled()
        assert not passes

    asyncio.run(main())


@WITHINS
def test_within_keeps_the_cancel_and_cancels_what_it_awaited(within_: Within) -> None:
    async def main() -> None:
        inner_ended = asyncio.Event()

        async def slow() -> None:
            try:
                await asyncio.sleep(10)
            finally:
                inner_ended.set()

        task = asyncio.get_running_loop().create_task(within_(slow(), 10))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert inner_ended.is_set()

    asyncio.run(main())


@WITHINS
def test_within_times_out_like_wait_for(within_: Within) -> None:
    async def main() -> None:
        cancelled = asyncio.Event()

        async def slow() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with pytest.raises(TimeoutError):
            await within_(slow(), 0.01)
        assert cancelled.is_set()
        assert await within_(asyncio.sleep(0, "done"), 1) == "done"
        assert await within(asyncio.sleep(0, "no limit"), None) == "no limit"
        with pytest.raises(ValueError, match="boom"):
            await within_(_fails(), 1)

    asyncio.run(main())


async def _fails() -> None:
    raise ValueError("boom")


@WITHINS
def test_within_returns_a_result_that_came_with_the_timeout(within_: Within) -> None:
    async def main() -> None:
        async def finishes_when_cancelled() -> str:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                return "finished anyway"
            return "slept"

        assert await within_(finishes_when_cancelled(), 0.01) == "finished anyway"

    asyncio.run(main())


def test_event_within_says_whether_the_event_is_set() -> None:
    async def main() -> None:
        event = asyncio.Event()
        assert await event_within(event, 0.01) is False
        asyncio.get_running_loop().call_later(0.01, event.set)
        assert await event_within(event, 5) is True
        assert await event_within(event, 0) is True  # set already: no wait

    asyncio.run(main())


def test_cancel_all_cancels_again_a_task_that_swallowed_the_cancel() -> None:
    async def main() -> None:
        swallowed = []

        async def stubborn() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed.append(1)  # as library code racing a completion may
            await asyncio.sleep(10)

        task = asyncio.get_running_loop().create_task(stubborn())
        done = asyncio.get_running_loop().create_task(asyncio.sleep(0))
        await asyncio.sleep(0)
        await cancel_all([task, done])
        assert swallowed == [1]
        assert task.cancelled()
        assert done.done()

    asyncio.run(main())
