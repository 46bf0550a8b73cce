"""Waiting with a deadline, and stopping tasks, without ever losing a cancellation.

Why. On Python before 3.12, `asyncio.wait_for` loses the cancellation of its caller when it
comes as the awaited thing completes: it sees the awaited thing done and returns its
result, and the caller's task runs on as if never cancelled. A loop that waits on an event
many times a second with `wait_for` (the leader's pass loop, woken by every replica that
registers) then outlives the `cancel()` meant to end it. That happened at 10,000 replicas:
a leader that lost its lease kept making passes (stopping and starting replicas) without
the lease, and never campaigned again, since its `stop()` waited for the loop for ever.

`within` is `wait_for` without that flaw, and `event_within` waits for an event: on Python
3.11+ both are `asyncio.timeout` (which counts cancellations, and needs no task of its
own: cheaper than `wait_for`), on 3.10 `asyncio.wait` (which never takes a cancellation
for a result). `cancel_all` cancels tasks until they have ended, so one that swallowed a
cancellation anyway (in a library's code) is cancelled again instead of holding its
owner's stop for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

#: How long `cancel_all` waits for cancelled tasks before it cancels again those left.
CANCEL_AGAIN_S = 0.5


async def within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """What `awaitable` gives, or TimeoutError after `timeout` seconds (None: no limit), as
    `asyncio.wait_for`: on the timeout it is cancelled and waited for (if it finished
    anyway, its result is returned). Unlike `wait_for` before Python 3.12, a cancellation
    of the caller always raises CancelledError, after `awaitable` is cancelled too."""
    if timeout is None:
        return await awaitable
    if hasattr(asyncio, "timeout"):  # 3.11+: in the caller's task, none of its own
        async with asyncio.timeout(max(0.0, timeout)):
            return await awaitable
    return await within_by_wait(awaitable, timeout)


async def within_by_wait(awaitable: Awaitable[T], timeout: float) -> T:
    """`within` on Python 3.10 (no `asyncio.timeout`): `awaitable` in a task of its own,
    awaited with `asyncio.wait`."""
    task = asyncio.ensure_future(awaitable)
    try:
        await asyncio.wait((task,), timeout=max(0.0, timeout))
    except asyncio.CancelledError:
        task.cancel()
        await _ended(task)
        if not task.cancelled():
            task.exception()  # retrieved: whatever it ended with goes with the cancellation
        raise
    if not task.done():
        task.cancel()
        await _ended(task)
        if task.cancelled():
            raise TimeoutError(f"not done within {timeout} s") from None
    return task.result()


async def event_within(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set or `timeout` seconds passed (None: no limit); whether it is
    set. A cancellation of the caller always raises CancelledError."""
    if event.is_set():
        return True
    try:
        await within(event.wait(), timeout)
    except TimeoutError:
        pass
    return event.is_set()


async def cancel_all(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel `tasks` and wait until every one has ended, cancelling again every
    CANCEL_AGAIN_S those still running (a task that lost a cancellation in code that
    swallows one). Their results and errors are left to them."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN_S)


async def _ended(task: asyncio.Future[Any]) -> None:
    """Wait until `task` has ended, however it ends; a cancellation of the caller raises."""
    if not task.done():
        await asyncio.wait((task,))
