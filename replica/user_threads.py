"""The bounded pool of threads that runs a replica's sync user code.

`loop.run_in_executor` on a `ThreadPoolExecutor` costs ~15 µs per call on the event loop's
side (a `concurrent.futures.Future` with its Condition and lock, the executor's idle
semaphore, the chain between the two futures): more than the no-op method it runs. Here a
call is one item on a `SimpleQueue` and one `call_soon_threadsafe` back, ~3 µs.

The pool counts its calls on the event loop (`busy`), from the moment one is handed over
until its thread is done with it: a call whose caller stopped waiting (timed out,
cancelled) keeps its thread, and its slot, until the user's code returns, as Ray's do.
Threads start on demand up to `max_threads` and are daemons: a sync method that never
returns must not keep a stopping replica alive.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", contextvars.Context,
              Callable[..., Any], tuple[Any, ...]]


class UserThreads:
    """Runs sync callables on up to `max_threads` threads; `run` is awaited on the loop."""

    def __init__(self, max_threads: int, name: str = "weir-user") -> None:
        self.max_threads = max(1, max_threads)
        self._name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False
        #: Calls handed over and not yet finished by their thread (queued or running).
        self.busy = 0

    def run(self, fn: Callable[..., Any], *args: Any,
            context: contextvars.Context | None = None) -> asyncio.Future[Any]:
        """Call `fn(*args)` on a thread, in a copy of the caller's context (its request
        id, for logs and handle calls) unless `context` is given; await the result. Only
        on the event loop. Cancelling the future abandons the call: a queued one does not
        start, a running one runs on."""
        if self._closed:
            raise RuntimeError("the replica's user threads are shut down")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.busy += 1
        if self.busy > len(self._threads) and len(self._threads) < self.max_threads:
            thread = threading.Thread(target=self._work, daemon=True,
                                      name=f"{self._name}_{len(self._threads)}")
            self._threads.append(thread)
            thread.start()
        self._queue.put((loop, future, context or contextvars.copy_context(), fn, args))
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            loop, future, context, fn, args = item
            result: Any = None
            error: BaseException | None = None
            if not future.cancelled():  # a stale read only runs a call nobody awaits
                try:
                    result = context.run(fn, *args)
                except BaseException as exc:
                    error = exc
            try:
                loop.call_soon_threadsafe(self._finished, future, result, error)
            except RuntimeError:
                return  # the loop is closed: the replica is gone
            del item, future, result, error  # hold nothing of the call while idle

    def _finished(self, future: asyncio.Future[Any], result: Any,
                  error: BaseException | None) -> None:
        self.busy -= 1
        if future.cancelled():
            return
        if error is None:
            future.set_result(result)
        elif isinstance(error, StopIteration):  # a Future refuses it, as a coroutine does
            future.set_exception(RuntimeError(f"StopIteration raised: {error}"))
        else:
            future.set_exception(error)

    def _dropped(self, future: asyncio.Future[Any]) -> None:
        self.busy -= 1
        future.cancel()

    def shutdown(self) -> None:
        """Start no more calls: queued ones are cancelled, running ones finish on their
        own, and each thread ends once it is free."""
        self._closed = True
        try:
            while (item := self._queue.get_nowait()) is not None:
                item[0].call_soon_threadsafe(self._dropped, item[1])
        except (queue.Empty, RuntimeError):  # RuntimeError: its loop is closed
            pass
        for _ in self._threads:
            self._queue.put(None)
