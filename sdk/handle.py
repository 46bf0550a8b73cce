"""DeploymentHandle and DeploymentResponse: calling a deployment from Python.

A handle is a name (app, deployment, method) plus call options; it pickles as such, so
handles pass freely into constructors and across processes and connect lazily to the
process's cluster. Calls run on the data plane loop (a replica's own loop, or a daemon
thread in a driver), so `.result()` can block in sync code while `await` works in async code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any, NoReturn

from weir import context
from weir.config import ray_options
from weir.config.ray_options import refuse_unknown
from weir.dataplane import payload
from weir.dataplane.request_id import new_request_id
from weir.exceptions import RayServeException, RequestCancelledError, remote_error
from weir.protos import weir_pb2 as pb
from weir.runtime_context import current_request


def decode_reply(reply: pb.CallReply) -> Any:
    """The Python value a reply carries, or the remote error raised as an instance of its
    own class (`weir.exceptions.remote_error`; UserCodeError if it cannot be rebuilt)."""
    if reply.outcome == pb.USER_ERROR:
        raise remote_error(reply.error_type, reply.error, reply.traceback, reply.pickled)
    if reply.outcome != pb.OK:
        raise RayServeException(reply.error or pb.CallOutcome.Name(reply.outcome))
    return payload.loads(reply.pickled) if reply.pickled else None


def _holds_response(value: Any) -> bool:
    """Whether `value` is or holds a DeploymentResponse (most arguments hold none, and
    `_resolve` costs a coroutine per item)."""
    if isinstance(value, DeploymentResponse):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_response(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_response(v) for v in value.values())
    return False


async def _resolve(value: Any) -> Any:
    """Await DeploymentResponses passed as arguments (chaining without awaiting)."""
    if isinstance(value, DeploymentResponse):
        return await value
    if isinstance(value, list):
        return [await _resolve(v) for v in value]
    if isinstance(value, tuple):
        return tuple([await _resolve(v) for v in value])
    if isinstance(value, dict):
        return {k: await _resolve(v) for k, v in value.items()}
    return value


def _on_data_plane_loop() -> bool:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return False
    return running is context.data_plane_loop()


class DeploymentResponse:
    """The future result of `handle.remote()`: `await` it, or `.result()` in sync code."""

    def __init__(self, task: asyncio.Future[Any] | concurrent.futures.Future[Any],
                 request_id: str = "") -> None:
        self._task = task
        #: The call's request id (the one of the request being served, when the call is
        #: made while serving one: it carries on through handles, as in Ray).
        self.request_id = request_id

    def __await__(self) -> Generator[Any, None, Any]:
        if isinstance(self._task, asyncio.Future):
            return self._task.__await__()
        return asyncio.wrap_future(self._task).__await__()

    def result(self, *, timeout_s: float | None = None) -> Any:
        """Block until the call returns; raises its error, or TimeoutError after timeout_s."""
        if isinstance(self._task, asyncio.Future):
            raise RuntimeError(
                "DeploymentResponse.result() would block the event loop; use `await response`"
            )
        try:
            return self._task.result(timeout=timeout_s)
        except concurrent.futures.CancelledError:
            raise RequestCancelledError("the request was cancelled") from None

    def cancel(self) -> None:
        """Cancel the call; the replica cancels its work (asyncio) or abandons it (threads)."""
        if isinstance(self._task, asyncio.Future):
            self._task.cancel()
        else:
            loop = context.data_plane_loop()
            loop.call_soon_threadsafe(self._task.cancel)

    def cancelled(self) -> bool:
        """Whether the call was cancelled."""
        return self._task.cancelled()


_END = object()


class DeploymentResponseGenerator:
    """The result of a streaming call (`handle.options(stream=True).remote()`): iterate it
    with `async for` or plain `for`."""

    def __init__(self, queue: asyncio.Queue[Any], task: asyncio.Future[Any],
                 request_id: str = "") -> None:
        self._queue = queue
        self._task = task
        #: The call's request id, as DeploymentResponse.request_id.
        self.request_id = request_id

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        if _on_data_plane_loop():
            item = await self._queue.get()
        else:
            item = await asyncio.wrap_future(context.submit(self._queue.get()))
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if _on_data_plane_loop():
            raise RuntimeError("iterating a DeploymentResponseGenerator with `for` would "
                               "block the event loop; use `async for`")
        item = context.submit(self._queue.get()).result()
        if item is _END:
            self._queue.put_nowait(_END)  # every later next() ends too
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> None:
        """Stop the stream; the replica stops producing."""
        context.data_plane_loop().call_soon_threadsafe(self._task.cancel)


class DeploymentHandle:
    """A handle to one deployment of one application; `.remote()` calls it."""

    def __init__(self, deployment_name: str, app_name: str = "default", *,
                 method_name: str = "__call__", stream: bool = False,
                 timeout_s: float | None = None, multiplexed_model_id: str = "") -> None:
        self.deployment_name = deployment_name
        self.app_name = app_name
        self.method_name = method_name
        self.stream = stream
        self.timeout_s = timeout_s
        #: The model every call of this handle asks for (`weir.multiplex`); "" for none.
        self.multiplexed_model_id = multiplexed_model_id

    def __repr__(self) -> str:
        return (f"DeploymentHandle(deployment={self.deployment_name!r}, "
                f"app={self.app_name!r}, method={self.method_name!r})")

    def __reduce__(self) -> Any:
        return (_rebuild, (self.deployment_name, self.app_name, self.method_name, self.stream,
                           self.timeout_s, self.multiplexed_model_id))

    def options(self, *, method_name: str | None = None,
                multiplexed_model_id: str | None = None,
                stream: bool | None = None, use_new_handle_api: bool | None = None,
                _prefer_local_routing: bool | None = None, _by_reference: bool | None = None,
                request_serialization: str | None = None,
                response_serialization: str | None = None, timeout_s: float | None = None,
                **unexpected: NoReturn) -> DeploymentHandle:
        """A handle with other call options: method_name, stream, multiplexed_model_id (the
        model each call asks for: it goes to a replica holding it, whose code reads it with
        `serve.get_multiplexed_model_id()`), and Weir's timeout_s (an end-to-end deadline per
        call). Ray's other options are accepted and warn that Weir ignores them; any other
        keyword is a TypeError."""
        if unexpected:
            refuse_unknown("DeploymentHandle.options", DeploymentHandle.options, unexpected)
        # `handle.some_method` comes through here on every call: build nothing unless one
        # of Ray's ignored options was given.
        if (use_new_handle_api is not None
                or _prefer_local_routing is not None or _by_reference is not None
                or request_serialization is not None or response_serialization is not None):
            ray_options.warn_ignored(ray_options.HANDLE_OPTIONS, {
                "use_new_handle_api": use_new_handle_api,
                "_prefer_local_routing": _prefer_local_routing,
                "_by_reference": _by_reference,
                "request_serialization": request_serialization,
                "response_serialization": response_serialization}, stacklevel=2)
        return DeploymentHandle(
            self.deployment_name, self.app_name,
            method_name=self.method_name if method_name is None else method_name,
            stream=self.stream if stream is None else stream,
            timeout_s=self.timeout_s if timeout_s is None else timeout_s,
            multiplexed_model_id=(self.multiplexed_model_id if multiplexed_model_id is None
                                  else _model_id(multiplexed_model_id)),
        )

    def __getattr__(self, name: str) -> DeploymentHandle:
        if name.startswith("__") or name in ("deployment_name", "app_name", "method_name",
                                             "stream", "timeout_s", "multiplexed_model_id"):
            raise AttributeError(name)
        return self.options(method_name=name)

    def _request(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                 request_id: str) -> pb.CallRequest:
        return pb.CallRequest(
            request_id=request_id,
            method="" if self.method_name == "__call__" else self.method_name,
            pickled_args=payload.dumps((args, kwargs)),
            caller="handle",
            multiplexed_model_id=self.multiplexed_model_id,
        )

    def _deadline(self) -> float | None:
        return None if self.timeout_s is None else time.monotonic() + self.timeout_s

    async def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                    request_id: str) -> Any:
        if _holds_response(args) or _holds_response(kwargs):
            args, kwargs = await _resolve(args), await _resolve(kwargs)
        plane = await context.get_data_plane()
        reply = await plane.call(self.app_name, self.deployment_name,
                                 self._request(args, kwargs, request_id), self._deadline())
        return decode_reply(reply)

    async def _produce(self, queue: asyncio.Queue[Any], args: tuple[Any, ...],
                       kwargs: dict[str, Any], request_id: str) -> None:
        try:
            args, kwargs = await _resolve(args), await _resolve(kwargs)
            plane = await context.get_data_plane()
            first = True
            async for reply in plane.stream(self.app_name, self.deployment_name,
                                            self._request(args, kwargs, request_id),
                                            self._deadline()):
                if first:
                    first = False
                    decode_reply(reply)  # raises if the call failed before the first item
                    continue
                await queue.put(decode_reply(reply))
            await queue.put(_END)
        except asyncio.CancelledError:
            await queue.put(_END)
            raise
        except BaseException as exc:
            await queue.put(exc)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Call the deployment: a DeploymentResponse, or with stream=True a
        DeploymentResponseGenerator."""
        request_id = current_request().request_id or new_request_id()
        if self.stream:
            return self._start_stream(args, kwargs, request_id)
        if _on_data_plane_loop():
            return DeploymentResponse(asyncio.get_running_loop().create_task(
                self._call(args, kwargs, request_id)), request_id)
        return DeploymentResponse(context.submit(self._call(args, kwargs, request_id)),
                                  request_id)

    def _start_stream(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                      request_id: str) -> Any:
        async def start() -> DeploymentResponseGenerator:
            queue: asyncio.Queue[Any] = asyncio.Queue()
            task = asyncio.get_running_loop().create_task(
                self._produce(queue, args, kwargs, request_id))
            return DeploymentResponseGenerator(queue, task, request_id)

        if _on_data_plane_loop():
            queue: asyncio.Queue[Any] = asyncio.Queue()
            task = asyncio.get_running_loop().create_task(
                self._produce(queue, args, kwargs, request_id))
            return DeploymentResponseGenerator(queue, task, request_id)
        return context.submit(start()).result()


def _model_id(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("DeploymentHandle.options(multiplexed_model_id=...) must be a str, "
                        f"got {type(value).__name__}")
    return value


def _rebuild(deployment: str, app: str, method: str, stream: bool,
             timeout_s: float | None, multiplexed_model_id: str = "") -> DeploymentHandle:
    return DeploymentHandle(deployment, app, method_name=method, stream=stream,
                            timeout_s=timeout_s, multiplexed_model_id=multiplexed_model_id)
