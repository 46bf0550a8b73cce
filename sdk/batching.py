"""Dynamic request batching: `@serve.batch`.

A batched function takes lists and returns a list of the same length; callers call it with
one item each and get their own result. Concurrent calls are gathered into one call of the
function: a batch goes as soon as it is full (`max_batch_size`) or `batch_wait_timeout_s`
after its first item arrived, whichever comes first.

Design. When a batch goes is decided by `weir.batch_planner.BatchPlanner`, a small state
machine over plain data, unit-tested with no event loop and no sleeps. Two drivers move
calls through it:

- `_LoopBatcher` for `async def` functions (Ray's only form) and async generators: callers
  await futures on their event loop; a timer fires at the planner's next deadline. There is
  no background task, so nothing outlives the work or leaks when an instance goes away.
- `_ThreadBatcher` for plain `def` functions: the caller threads themselves run the batch
  (the first one to find it ready), so no extra thread exists and a sync batch never
  touches the event loop. A replica runs sync methods on max_ongoing_requests threads, so
  that also bounds how large a sync batch can grow.

Batches are per instance: each object whose method is decorated has its own queues and
settings (`self.method.set_max_batch_size(n)` changes only that instance's).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import structlog

from weir.batch_planner import (
    DEFAULT_BATCH_WAIT_TIMEOUT_S,
    DEFAULT_MAX_BATCH_SIZE,
    BatchPlanner,
    batch_arguments,
    check_batch_options,
    check_results,
)
from weir.runtime_context import current_request

log = structlog.get_logger("weir.batching")

@dataclass
class _Call:
    """One caller's item: its arguments and where its answer goes."""

    arguments: inspect.BoundArguments
    future: Any  # asyncio.Future, concurrent.futures.Future or, streaming, asyncio.Queue
    closed: bool = False


_END = object()
_ERROR = object()


class _Batcher:
    """What both drivers share: the planner, the function, its signature."""

    def __init__(self, func: Callable[..., Any], signature: inspect.Signature,
                 qualname: str, options: dict[str, Any]) -> None:
        self.func = func
        self.signature = signature
        self.qualname = qualname
        user_size_fn = options.get("batch_size_fn")
        if user_size_fn is not None:
            # The planner holds our _Call records; the user's function sizes what the
            # callers passed, as in Ray.
            options = {**options,
                       "batch_size_fn": lambda calls: user_size_fn(self.items_of(calls))}
        self.planner: BatchPlanner[_Call] = BatchPlanner(**options)

    def items_of(self, calls: list[_Call]) -> list[Any]:
        """What each caller passed, for `batch_size_fn`: its value for a function of one
        parameter (Ray's form), a tuple of its values for one of several."""
        if len(self.signature.parameters) == 1:
            return [next(iter(c.arguments.arguments.values())) for c in calls]
        return [tuple(c.arguments.arguments.values()) for c in calls]

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        """The caller's arguments matched to the signature (a TypeError to this caller alone
        if they do not fit)."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound

    def arguments_of(self, calls: list[_Call]) -> tuple[list[Any], dict[str, Any]]:
        """The batched call's arguments."""
        return batch_arguments(self.signature, [c.arguments for c in calls])


class _LoopBatcher(_Batcher):
    """Batches `async def` functions and async generators on the callers' event loop."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _enter(self, call: _Call) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self.planner.waiting or self.planner.running:
                raise RuntimeError(f"@serve.batch function {self.qualname} is in use on "
                                   "another event loop")
            self._loop, self._timer = loop, None
        self.planner.add(call, loop.time())
        self._pump()

    async def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One caller's call: wait for its batch and return its own result."""
        future = asyncio.get_running_loop().create_future()
        self._enter(_Call(self.bind(args, kwargs), future))
        return await future

    async def stream(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """One caller's call of a batched async generator: its own items, as they come."""
        queue: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue()
        call = _Call(self.bind(args, kwargs), queue)
        self._enter(call)
        try:
            while True:
                kind, value = await queue.get()
                if kind is _END:
                    return
                if kind is _ERROR:
                    raise value
                yield value
        finally:
            call.closed = True

    def _pump(self) -> None:
        assert self._loop is not None
        while (batch := self.planner.take(self._loop.time())) is not None:
            task = self._loop.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        deadline = self.planner.next_deadline()
        if self._timer is not None and (deadline is None or self._timer.when() != deadline):
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._timer is None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    async def _run(self, batch: list[_Call]) -> None:
        streaming = inspect.isasyncgenfunction(self.func)
        live = [c for c in batch if not (c.closed if streaming else c.future.done())]
        try:
            if live:
                args, kwargs = self.arguments_of(live)
                if streaming:
                    await self._run_stream(live, args, kwargs)
                else:
                    results = check_results(await self.func(*args, **kwargs), len(live),
                                            self.qualname)
                    for call, result in zip(live, results, strict=True):
                        if not call.future.done():
                            call.future.set_result(result)
        except Exception as exc:
            log.warning("batch failed", function=self.qualname, batch_size=len(live),
                        error=f"{type(exc).__name__}: {exc}")
            for call in live:
                if streaming:
                    call.future.put_nowait((_ERROR, exc))
                elif not call.future.done():
                    call.future.set_exception(exc)
        except asyncio.CancelledError:
            for call in live:
                if not streaming:
                    call.future.cancel()
            raise
        finally:
            self.planner.finish()
            self._pump()

    async def _run_stream(self, live: list[_Call], args: list[Any],
                          kwargs: dict[str, Any]) -> None:
        ended = [False] * len(live)
        async for outputs in self.func(*args, **kwargs):
            for i, output in enumerate(check_results(outputs, len(live), self.qualname)):
                if ended[i] or live[i].closed:
                    continue
                # Ray's convention: StopIteration in a slot ends that caller's stream.
                if output is StopIteration or isinstance(output, StopIteration):
                    ended[i] = True
                    live[i].future.put_nowait((_END, None))
                else:
                    live[i].future.put_nowait((None, output))
        for i, call in enumerate(live):
            if not ended[i]:
                call.future.put_nowait((_END, None))


class _ThreadBatcher(_Batcher):
    """Batches plain `def` functions among caller threads; the caller that finds a batch
    due runs it, in its own thread."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self._cond = threading.Condition()

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One caller's call: block until its batch ran, return its own result."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise TypeError(
                f"@serve.batch function {self.qualname} is a plain `def`: calling it blocks "
                "the caller until its batch ran, which would stall this event loop. Call it "
                "from a sync method, use `await asyncio.to_thread(...)`, or make it "
                "`async def`.")
        future: Future[Any] = Future()
        mine = _Call(self.bind(args, kwargs), future)
        with self._cond:
            self.planner.add(mine, time.monotonic())
        while True:
            with self._cond:
                while not future.done():
                    batch = self.planner.take(time.monotonic())
                    if batch is not None:
                        break
                    deadline = self.planner.next_deadline()
                    self._cond.wait(None if deadline is None
                                    else max(0.0, deadline - time.monotonic()))
                else:
                    return future.result()
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self.planner.finish()
                    self._cond.notify_all()

    def _run(self, batch: list[_Call]) -> None:
        try:
            args, kwargs = self.arguments_of(batch)
            results = check_results(self.func(*args, **kwargs), len(batch), self.qualname)
        except Exception as exc:
            log.warning("batch failed", function=self.qualname, batch_size=len(batch),
                        error=f"{type(exc).__name__}: {exc}")
            for call in batch:
                call.future.set_exception(exc)
            return
        for call, result in zip(batch, results, strict=True):
            call.future.set_result(result)


class _ModelBatchers:
    """One batcher per multiplexed model id ("" for calls naming none), made on first use
    with the function's current settings; the setters change every one of them."""

    def __init__(self, make: Callable[[dict[str, Any]], _Batcher],
                 options: dict[str, Any]) -> None:
        self._make = make
        self.options = dict(options)
        self._batchers: dict[str, _Batcher] = {}
        self._lock = threading.Lock()

    def current(self) -> _Batcher:
        """The batcher of the model the current request names."""
        model_id = current_request().multiplexed_model_id
        batcher = self._batchers.get(model_id)
        if batcher is None:
            with self._lock:
                batcher = self._batchers.get(model_id)
                if batcher is None:
                    batcher = self._batchers[model_id] = self._make(self.options)
        return batcher

    def set_max_batch_size(self, max_batch_size: int) -> None:
        """Change the batch size, for every model's batcher."""
        check_batch_options(max_batch_size, self.options["batch_wait_timeout_s"])
        with self._lock:
            for batcher in self._batchers.values():
                batcher.planner.set_max_batch_size(max_batch_size)
            self.options["max_batch_size"] = max_batch_size

    def set_batch_wait_timeout_s(self, batch_wait_timeout_s: float) -> None:
        """Change the wait, for every model's batcher."""
        check_batch_options(self.options["max_batch_size"], batch_wait_timeout_s)
        with self._lock:
            for batcher in self._batchers.values():
                batcher.planner.set_batch_wait_timeout_s(batch_wait_timeout_s)
            self.options["batch_wait_timeout_s"] = batch_wait_timeout_s


class _BatchedFunction:
    """What `@serve.batch` returns: a descriptor giving each instance its own batcher, and
    callable itself when it decorates a plain function."""

    def __init__(self, func: Callable[..., Any], options: dict[str, Any]) -> None:
        functools.update_wrapper(self, func)  # type: ignore[arg-type]
        self._func = func
        self._qualname: str = func.__qualname__
        self._options = options
        self._key = f"__weir_batch_{func.__name__}"
        self._lock = threading.Lock()
        self._unbound: Callable[..., Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Shipped to replicas (cloudpickle) before first use; its runtime state stays home.
        state = dict(self.__dict__)
        state.pop("_lock")
        state["_unbound"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        try:
            slots = vars(instance)
        except TypeError:
            raise TypeError(f"@serve.batch method {self._qualname} needs instances with a "
                            f"__dict__ to keep their batches in") from None
        bound = slots.get(self._key)
        if bound is None:
            with self._lock:
                bound = slots.get(self._key)
                if bound is None:
                    bound = slots[self._key] = self._make(instance)
        return bound

    def _caller(self) -> Callable[..., Any]:
        if self._unbound is None:
            with self._lock:
                if self._unbound is None:
                    self._unbound = self._make(None)
        return self._unbound

    def _make(self, instance: Any) -> Callable[..., Any]:
        """A function with the caller's signature, over batchers of its own (one per
        multiplexed model id: Ray splits batches by model, so that a batched function
        serves one model and `serve.get_multiplexed_model_id()` names it)."""
        func = self._func
        signature = inspect.signature(func)
        if instance is not None:
            func = func.__get__(instance, type(instance))
            signature = signature.replace(parameters=list(signature.parameters.values())[1:])
        qualname = self._qualname
        caller: Callable[..., Any]
        kind: type[_Batcher]
        if inspect.isasyncgenfunction(self._func):
            kind = _LoopBatcher
        elif inspect.iscoroutinefunction(self._func):
            kind = _LoopBatcher
        else:
            kind = _ThreadBatcher
        batchers = _ModelBatchers(lambda options: kind(func, signature, qualname, options),
                                  self._options)
        if inspect.isasyncgenfunction(self._func):
            async def caller(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                streamer = batchers.current()
                assert isinstance(streamer, _LoopBatcher)
                async for item in streamer.stream(args, kwargs):
                    yield item
        elif inspect.iscoroutinefunction(self._func):
            async def caller(*args: Any, **kwargs: Any) -> Any:
                awaiter = batchers.current()
                assert isinstance(awaiter, _LoopBatcher)
                return await awaiter.call(args, kwargs)
        else:
            def caller(*args: Any, **kwargs: Any) -> Any:
                blocker = batchers.current()
                assert isinstance(blocker, _ThreadBatcher)
                return blocker.call(args, kwargs)

        functools.update_wrapper(caller, self._func)
        # Ray's names: the setters are public, the getters its tests' private helpers.
        for name, attr in {"set_max_batch_size": batchers.set_max_batch_size,
                           "set_batch_wait_timeout_s": batchers.set_batch_wait_timeout_s,
                           "_get_max_batch_size": lambda: batchers.options["max_batch_size"],
                           "_get_batch_wait_timeout_s":
                               lambda: batchers.options["batch_wait_timeout_s"],
                           }.items():
            setattr(caller, name, attr)
        return caller

    # A plain function's own setters, as Ray's wrapper has them.
    def set_max_batch_size(self, max_batch_size: int) -> None:
        """Change the batch size of this (plain function's) batcher."""
        self._caller().set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]

    def set_batch_wait_timeout_s(self, batch_wait_timeout_s: float) -> None:
        """Change the wait of this (plain function's) batcher."""
        self._caller().set_batch_wait_timeout_s(batch_wait_timeout_s)  # type: ignore[attr-defined]


class _AsyncBatchedFunction(_BatchedFunction):
    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await self._caller()(*args, **kwargs)


class _StreamBatchedFunction(_BatchedFunction):
    async def __call__(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for item in self._caller()(*args, **kwargs):
            yield item


class _SyncBatchedFunction(_BatchedFunction):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._caller()(*args, **kwargs)


def batch(_func: Callable[..., Any] | None = None, /, *,
          max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
          batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_TIMEOUT_S,
          max_concurrent_batches: int = 1,
          batch_size_fn: Callable[[list[Any]], int] | None = None) -> Any:
    """Batch concurrent calls of a function or method that takes lists: `@serve.batch` or
    `@serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)`.

    Callers pass one item (one value per parameter) and get their own result; the function
    receives a list per parameter and must return a list of the same length (a
    RayServeException naming the function otherwise). An exception it raises reaches every
    caller of that batch. A batch runs when `max_batch_size` items wait (or `batch_size_fn`
    of the waiting items reaches it: it gets the list of what the callers passed, a tuple
    each for a function of several parameters) or `batch_wait_timeout_s` after its first
    item; at most
    `max_concurrent_batches` run at once.

    Forms: `async def` (callers await it), an async generator yielding one list of outputs
    per step (each caller gets an async iterator of its own outputs; `StopIteration` in a
    slot ends that caller's stream), and plain `def` (callers block in their threads; the
    batch runs in one of them; call it from sync code). The decorated method has
    `set_max_batch_size(n)` and `set_batch_wait_timeout_s(s)`, e.g. for `reconfigure`.
    Keep max_ongoing_requests >= max_batch_size, or batches can never fill.
    """
    check_batch_options(max_batch_size, batch_wait_timeout_s, max_concurrent_batches,
                        batch_size_fn)
    options = {"max_batch_size": max_batch_size, "batch_wait_timeout_s": batch_wait_timeout_s,
               "max_concurrent_batches": max_concurrent_batches,
               "batch_size_fn": batch_size_fn}

    def decorate(func: Callable[..., Any]) -> _BatchedFunction:
        if not callable(func) or inspect.isclass(func):
            raise TypeError(f"@serve.batch decorates a function or method, got {func!r}")
        for param in inspect.signature(func).parameters.values():
            if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise TypeError(f"@serve.batch function {func.__qualname__} cannot take "
                                f"*args or **kwargs: name each batched parameter")
        if inspect.isasyncgenfunction(func):
            return _StreamBatchedFunction(func, options)
        if inspect.iscoroutinefunction(func):
            return _AsyncBatchedFunction(func, options)
        return _SyncBatchedFunction(func, options)

    if _func is not None:
        return decorate(_func)
    return decorate
