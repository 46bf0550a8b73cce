"""The user's deployment inside a replica: construct it, call its methods, and turn what
they return into HTTP responses or pickled values.

Sync methods run on a bounded pool of threads (`UserThreads`), async ones on the
replica's event loop.
HTTP requests reach user code as a starlette `Request` (or, for `@serve.ingress` classes,
as the ASGI call itself); whatever comes back is played through ASGI so that every
starlette Response, streaming ones included, passes through unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

import cloudpickle
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from weir import cancellation
from weir.dataplane import payload
from weir.protos import weir_pb2 as pb
from weir.replica.json_encoding import jsonable
from weir.replica.user_threads import UserThreads
from weir.user_method import user_method

Message = dict[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
T = TypeVar("T")


class UserCallableError(Exception):
    """The deployment could not be loaded or constructed; the message says why."""


class CallTimedOut(Exception):
    """A call's time ran out on the replica (`within`); its work was cancelled. Not a
    TimeoutError, so that one the user's code raises is not taken for it."""


async def within(timeout: float | None, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it after `timeout` seconds (None: no limit) and raising
    CallTimedOut. Without a limit it is a plain await: `asyncio.timeout` costs more than a
    no-op call, and `weir.cancellation.within` runs the work in a task of its own."""
    if timeout is None:
        return await work
    if not hasattr(asyncio, "timeout"):  # Python 3.10: a task of its own
        try:
            return await cancellation.within(work, timeout)
        except asyncio.TimeoutError:
            raise CallTimedOut(f"timed out after {timeout:.3f} s") from None
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await work
    except TimeoutError:
        if scope.expired():
            raise CallTimedOut(f"timed out after {timeout:.3f} s") from None
        raise


def http_scope(http: pb.HttpRequest) -> dict[str, Any]:
    """The ASGI scope of a forwarded HTTP request."""
    client = (http.client_host, http.client_port) if http.client_host else None
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": http.http_version or "1.1",
        "method": http.method,
        "scheme": http.scheme or "http",
        "path": http.path,
        "raw_path": http.path.encode(),
        "query_string": http.query_string,
        "root_path": http.root_path,
        "headers": [(h.name, h.value) for h in http.headers],
        "client": client,
        "server": None,
    }


def body_receiver(body: bytes, rest: asyncio.Queue[pb.BodyChunk | None] | None = None,
                  ) -> Callable[[], Awaitable[Message]]:
    """An ASGI `receive` that yields `body`, then the chunks of `rest` as they arrive (a
    body still streaming from the caller; None in it: the caller went away), then waits for
    a disconnect forever."""
    sent = False
    more = rest is not None

    async def receive() -> Message:
        nonlocal sent, more
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        if more and rest is not None:
            chunk = await rest.get()
            if chunk is None:
                more = False
                return {"type": "http.disconnect"}
            more = not chunk.last
            return {"type": "http.request", "body": chunk.data, "more_body": more}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    return receive


_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_OCTETS = (b"content-type", b"application/octet-stream")


def plain_response(result: Any) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
    """The headers and body `to_response` plays for a str or bytes result, byte for byte,
    without building a starlette Response (8 µs of the replica's CPU per call: a str is
    what most HTTP deployments return); None for any other result."""
    kind = type(result)
    if kind is str:
        body, content_type = result.encode(), _TEXT
    elif kind is bytes:
        body, content_type = result, _OCTETS
    else:
        return None
    return [(b"content-length", str(len(body)).encode()), content_type], body


def to_response(result: Any) -> Response:
    """Ray Serve's conversions: str -> text/plain, bytes as is, a starlette Response as is,
    a generator -> a streaming response; anything else as JSON, encoded as FastAPI does
    (pydantic models, dataclasses, datetimes, Mappings...)."""
    if isinstance(result, Response):
        return result
    if isinstance(result, str):
        return PlainTextResponse(result)
    if isinstance(result, (bytes, bytearray, memoryview)):
        return Response(bytes(result), media_type="application/octet-stream")
    if inspect.isgenerator(result) or inspect.isasyncgen(result):
        return StreamingResponse(result, media_type="text/plain")  # type: ignore[arg-type]
    try:
        content = jsonable(result)
    except TypeError as exc:
        raise TypeError(
            f"the return value of type {type(result).__name__} cannot be sent over HTTP "
            f"({exc}): return str, bytes, a value FastAPI can encode as JSON (dict, list, "
            "pydantic model, dataclass, ...), or a starlette Response"
        ) from None
    return JSONResponse(content)


def takes_request(fn: Callable[..., Any]) -> bool:
    """Whether an HTTP call passes the request to `fn`: only if it can take a positional
    argument (a signature Python cannot read gets it, as before)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                  inspect.Parameter.VAR_POSITIONAL)
    return any(p.kind in positional for p in params)


def takes_rank(reconfigure: Callable[..., Any]) -> bool:
    """Whether a `reconfigure` takes the replica's rank (a parameter named `rank`)."""
    try:
        return "rank" in inspect.signature(reconfigure).parameters
    except (TypeError, ValueError):
        return False


class UserCallable:
    """One instance of the user's deployment and the way to call it."""

    def __init__(self, definition: bytes, *, max_threads: int) -> None:
        self._definition = definition
        self.threads = UserThreads(max_threads)
        self.instance: Any = None
        self.is_function = False
        self.asgi_app: Any = None
        #: `takes_request` per method name: reading a signature costs more than the call.
        self._takes_request: dict[str, bool] = {}

    async def construct(self) -> None:
        """Unpickle the definition and run the constructor (in a thread: it may block)."""
        run = self.threads.run
        try:
            target, args, kwargs = await run(cloudpickle.loads, self._definition)
        except Exception as exc:
            raise UserCallableError(f"could not load the deployment's code: "
                                    f"{type(exc).__name__}: {exc}") from exc
        if inspect.isclass(target):
            self.instance = await run(lambda: target(*args, **kwargs))
            # An ingress may build its app here (`@serve.ingress(builder)`): not on the loop.
            self.asgi_app = await run(getattr, self.instance, "__weir_asgi_app__", None)
            startup = getattr(self.asgi_app, "startup", None)
            if startup is not None:
                await startup()
        else:
            self.is_function = True
            self.instance = target

    def method(self, name: str) -> Callable[..., Any]:
        """The bound method to call (`""` is `__call__`)."""
        return user_method(self.instance, self.is_function, name)

    async def invoke(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call sync code in the thread pool, async code on the loop."""
        if inspect.iscoroutinefunction(fn) or (
            not inspect.isfunction(fn) and not inspect.ismethod(fn)
            and inspect.iscoroutinefunction(type(fn).__call__)
        ):
            return await fn(*args, **kwargs)
        # The request's context (its id, for logs and handle calls) goes with it.
        result = await (self.threads.run(functools.partial(fn, *args, **kwargs)) if kwargs
                        else self.threads.run(fn, *args))
        if inspect.isawaitable(result):
            result = await result
        return result

    @property
    def busy_threads(self) -> int:
        """Sync calls handed to the threads and not finished (a timed-out one counts until
        its code returns)."""
        return self.threads.busy

    async def reconfigure(self, user_config: Any, rank: Any = None) -> None:
        """Call the user's `reconfigure(user_config)`, or `reconfigure(user_config, rank)`
        (Ray's form with the replica's rank), if it has one."""
        fn = getattr(self.instance, "reconfigure", None)
        if fn is None or self.is_function:
            return
        if takes_rank(fn):
            await self.invoke(fn, user_config, rank=rank)
        else:
            await self.invoke(fn, user_config)

    async def check_health(self) -> None:
        """Call the user's `check_health()` if it has one; raises if unhealthy."""
        fn = getattr(self.instance, "check_health", None)
        if fn is not None and not self.is_function:
            await self.invoke(fn)

    async def call_python(self, method: str, pickled_args: bytes) -> Any:
        """A handle call: unpickle (args, kwargs) and call the method."""
        args, kwargs = payload.loads(pickled_args) if pickled_args else ((), {})
        return await self.invoke(self.method(method), *args, **kwargs)

    async def stream_python(self, method: str, pickled_args: bytes) -> AsyncIterator[Any]:
        """A streaming handle call: the method is a (sync or async) generator."""
        args, kwargs = payload.loads(pickled_args) if pickled_args else ((), {})
        async for item in self.iterate(self.method(method), *args, **kwargs):
            yield item

    async def iterate(self, fn: Callable[..., Any], *args: Any,
                      **kwargs: Any) -> AsyncIterator[Any]:
        """What a (sync or async) generator method yields, as it yields it; a method that
        returns a plain value yields that one value."""
        if inspect.isasyncgenfunction(fn):
            async for item in fn(*args, **kwargs):
                yield item
            return
        result = await self.invoke(fn, *args, **kwargs)
        if inspect.isasyncgen(result):
            async for item in result:
                yield item
        elif inspect.isgenerator(result):
            async for item in _iterate_in_thread(result, self.threads):
                yield item
        else:
            yield result

    async def call_http(self, method: str, http: pb.HttpRequest, send: Send,
                        rest: asyncio.Queue[pb.BodyChunk | None] | None = None) -> None:
        """An HTTP call: play the request through the ingress ASGI app, or call the method
        with a starlette Request and play its result; ASGI messages go to `send`. `rest`:
        the chunks of a body still arriving after `http.body`."""
        scope = http_scope(http)
        receive = body_receiver(http.body, rest)
        if self.asgi_app is not None and not method:
            await self.asgi_app(scope, receive, send)
            return
        fn = self.method(method)
        # As in Ray, a callable without parameters (`def __call__(self)`) gets no request.
        wants = self._takes_request.get(method)
        if wants is None:
            wants = self._takes_request[method] = takes_request(fn)
        args = (Request(scope, receive),) if wants else ()
        if inspect.isasyncgenfunction(fn):
            result: Any = fn(*args)
        else:
            result = await self.invoke(fn, *args)
        plain = plain_response(result)
        if plain is not None:
            headers, body = plain
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if inspect.isgenerator(result):
            result = _iterate_in_thread(result, self.threads)
        await to_response(result)(scope, receive, send)

    async def close(self, timeout: float = 5.0) -> None:
        """The replica is stopping: run the ingress app's lifespan shutdown, if any."""
        shutdown = getattr(self.asgi_app, "shutdown", None)
        if shutdown is not None:
            await shutdown(timeout)

    def shutdown(self) -> None:
        """Run the user's `__del__`-style cleanup and stop the thread pool."""
        self.threads.shutdown()


async def _iterate_in_thread(gen: Any, threads: UserThreads) -> AsyncIterator[Any]:
    done = object()
    context = contextvars.copy_context()
    while True:
        item = await threads.run(next, gen, done, context=context)
        if item is done:
            return
        yield item


def error_fields(exc: BaseException, *, with_cause: bool = False) -> dict[str, Any]:
    """The error fields of a reply for an exception raised by user code. `with_cause`: the
    exception itself pickled too, for a handle caller to raise as its own class
    (`weir.exceptions.remote_error`); left out if it does not pickle."""
    import traceback

    fields: dict[str, Any] = {
        "error": str(exc) or type(exc).__name__,
        "error_type": type(exc).__name__,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }
    if with_cause:
        try:
            fields["pickled"] = cloudpickle.dumps(exc.with_traceback(None))
        except Exception:
            pass  # the caller gets the generic UserCodeError
    return fields


def add_sys_paths(paths: list[str]) -> None:
    """Put runtime_env paths first on sys.path (working_dir, py_modules)."""
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
