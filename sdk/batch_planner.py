"""When a batch of `@serve.batch` calls runs, and with which arguments: pure logic over plain
data (opaque items, arrival times, a clock the caller passes in), no event loop, no threads.

`weir.batching` drives it, on an event loop for `async def` functions and among caller
threads for plain ones; both ask the same `BatchPlanner`, so both batch alike.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from weir.exceptions import RayServeException

T = TypeVar("T")

DEFAULT_MAX_BATCH_SIZE = 10
DEFAULT_BATCH_WAIT_TIMEOUT_S = 0.01


def check_batch_options(max_batch_size: Any, batch_wait_timeout_s: Any,
                        max_concurrent_batches: Any = 1,
                        batch_size_fn: Any = None) -> tuple[int, float, int]:
    """Validate the options of `@serve.batch`; returns them normalised or raises naming the
    option and the value given."""
    if isinstance(max_batch_size, float) and max_batch_size.is_integer():
        max_batch_size = int(max_batch_size)
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int):
        raise TypeError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
    if isinstance(batch_wait_timeout_s, bool) or not isinstance(batch_wait_timeout_s,
                                                                  (int, float)):
        raise TypeError(f"batch_wait_timeout_s must be a number >= 0, "
                        f"got {batch_wait_timeout_s!r}")
    if batch_wait_timeout_s < 0:
        raise ValueError(f"batch_wait_timeout_s must be a number >= 0, "
                         f"got {batch_wait_timeout_s!r}")
    if (isinstance(max_concurrent_batches, bool) or not isinstance(max_concurrent_batches, int)
            or max_concurrent_batches < 1):
        raise ValueError(f"max_concurrent_batches must be an integer >= 1, "
                         f"got {max_concurrent_batches!r}")
    if batch_size_fn is not None and not callable(batch_size_fn):
        raise TypeError(f"batch_size_fn must be a callable or None, got {batch_size_fn!r}")
    return max_batch_size, float(batch_wait_timeout_s), max_concurrent_batches


class BatchPlanner(Generic[T]):
    """When to run a batch, and which items go in it; no clock or I/O of its own.

    Items wait in arrival order. `take(now)` hands out the next batch when one is due: the
    waiting items fill `max_batch_size` (by count, or by `batch_size_fn` of the batch), or
    the oldest has waited `batch_wait_timeout_s`; and fewer than `max_concurrent_batches`
    batches are running. `finish()` says a batch is done. `next_deadline()` is when the
    oldest item's wait runs out, for the driver's timer.
    """

    def __init__(self, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_TIMEOUT_S,
                 max_concurrent_batches: int = 1,
                 batch_size_fn: Callable[[list[T]], int] | None = None) -> None:
        self.max_batch_size, self.batch_wait_timeout_s, self.max_concurrent_batches = (
            check_batch_options(max_batch_size, batch_wait_timeout_s, max_concurrent_batches,
                                batch_size_fn))
        self.batch_size_fn = batch_size_fn
        self.waiting: deque[tuple[float, T]] = deque()
        self.running = 0

    def add(self, item: T, now: float) -> None:
        """An item arrived at `now`."""
        self.waiting.append((now, item))

    def take(self, now: float) -> list[T] | None:
        """The batch to run now, or None if none is due."""
        if not self.waiting or self.running >= self.max_concurrent_batches:
            return None
        size = self._full_batch_length()
        if size is None:
            if now < self.waiting[0][0] + self.batch_wait_timeout_s:
                return None
            size = len(self.waiting)
        self.running += 1
        return [self.waiting.popleft()[1] for _ in range(size)]

    def finish(self) -> None:
        """A batch handed out by `take` has finished."""
        self.running = max(0, self.running - 1)

    def next_deadline(self) -> float | None:
        """When `take` will hand out a batch even if nothing else happens (None: never, as
        nothing waits, or only after a running batch finishes)."""
        if not self.waiting or self.running >= self.max_concurrent_batches:
            return None
        return self.waiting[0][0] + self.batch_wait_timeout_s

    def set_max_batch_size(self, max_batch_size: int) -> None:
        """Change the batch size from the next batch on."""
        self.max_batch_size = check_batch_options(max_batch_size, self.batch_wait_timeout_s)[0]

    def set_batch_wait_timeout_s(self, batch_wait_timeout_s: float) -> None:
        """Change the wait from the next batch on (items already waiting included)."""
        self.batch_wait_timeout_s = check_batch_options(self.max_batch_size,
                                                        batch_wait_timeout_s)[1]

    def _full_batch_length(self) -> int | None:
        """How many of the oldest items make a full batch, or None if they do not yet."""
        if self.batch_size_fn is None:
            full = len(self.waiting) >= self.max_batch_size
            return self.max_batch_size if full else None
        items: list[T] = []
        for _, item in self.waiting:
            items.append(item)
            size = self.batch_size_fn(items)
            if size > self.max_batch_size:
                # One item over the limit on its own still runs, alone.
                return max(1, len(items) - 1)
            if size == self.max_batch_size:
                return len(items)
        return None


def batch_arguments(signature: inspect.Signature,
                    calls: Sequence[inspect.BoundArguments]) -> tuple[list[Any], dict[str, Any]]:
    """The arguments of one batched call from the calls' own: every parameter becomes the
    list of the values the callers passed for it, in the callers' order."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        values = [call.arguments[name] for call in calls]
        if param.kind is inspect.Parameter.KEYWORD_ONLY:
            kwargs[name] = values
        else:
            args.append(values)
    return args, kwargs


def check_results(results: Any, expected: int, qualname: str) -> list[Any]:
    """The batch function's results as a list, or a RayServeException saying what it
    returned instead of one result per input."""
    try:
        got = len(results)
    except TypeError:
        raise RayServeException(
            f"@serve.batch function {qualname} returned {type(results).__name__}, not a "
            f"list: it must return a list with one result per input "
            f"(a batch of {expected} inputs here)") from None
    if got != expected:
        raise RayServeException(
            f"@serve.batch function {qualname} returned {got} results for a batch of "
            f"{expected} inputs: it must return a list with one result per input, in order")
    return list(results)
