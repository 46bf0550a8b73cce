"""`@serve.ingress(app)`: a deployment whose HTTP requests go through an ASGI app (FastAPI,
Starlette or any other), as in Ray Serve.

The replica plays each HTTP request through `instance.__weir_asgi_app__` when the class has
one (`weir.replica.user_callable`); this module sets that hook. The proxy passes the full path
with the route prefix as ASGI `root_path`, so the app's routes are written without the
prefix (Starlette and FastAPI strip it), as Ray does.

FastAPI routes declared on the class (`@app.get("/x") def m(self, ...)`) were registered
before the class existed, with `self` taken for a query parameter. `ingress` re-registers
each such route, in place and with the same options, so that `self` is a dependency
resolving to the replica's live instance. The instance travels in the request's ASGI scope
(set by a thin per-instance wrapper), not in a global, so any number of instances can
share one app object.
"""

from __future__ import annotations

import asyncio
import copyreg
import functools
import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from starlette.datastructures import State

log = structlog.get_logger("weir.ingress")

#: The ASGI scope key holding the deployment instance serving the request.
INSTANCE_SCOPE_KEY = "weir.ingress_instance"

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class BoundIngress:
    """The ASGI app of one deployment instance: the user's app, with the instance in the
    scope for class-based routes, and the app's lifespan run when the replica starts."""

    def __init__(self, app: ASGIApp, instance: Any) -> None:
        self.app = app
        self.instance = instance
        #: What the app's lifespan yielded (ASGI lifespan state), copied into each request.
        self.state: dict[str, Any] = {}
        self._lifespan: asyncio.Future[None] | None = None
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._replies: list[asyncio.Future[MutableMapping[str, Any]]] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        await self.app({**scope, INSTANCE_SCOPE_KEY: self.instance, "state": dict(self.state)},
                       receive, send)

    async def startup(self) -> None:
        """Run the app's lifespan startup (FastAPI `lifespan=` / `on_startup`), as Ray does
        when a replica starts; a startup that fails raises, and so fails the replica. An app
        that does not speak lifespan is served all the same."""
        inbox = self._inbox
        inbox.put_nowait({"type": "lifespan.startup"})
        reply: asyncio.Future[MutableMapping[str, Any]] = (
            asyncio.get_running_loop().create_future())
        self._replies.append(reply)

        async def send(message: MutableMapping[str, Any]) -> None:
            waiting = [r for r in self._replies if not r.done()]
            if waiting:
                waiting[0].set_result(message)

        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": self.state}
        # The task lives on, parked in receive(), until the replica's process ends.
        self._lifespan = asyncio.ensure_future(self.app(scope, inbox.get, send))
        self._lifespan.add_done_callback(lambda t: t.cancelled() or t.exception())
        waits: set[asyncio.Future[Any]] = {reply, self._lifespan}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():
            return  # the app ended (or refused) the lifespan call at once: it has none
        message = reply.result()
        if message["type"] == "lifespan.startup.failed":
            # Starlette sends a whole traceback; its last line says what went wrong.
            text = str(message.get("message") or "").strip()
            log.error("ingress app startup failed", detail=text)
            reason = text.splitlines()[-1] if text else "no reason given"
            raise RuntimeError(f"the ingress app's startup failed: {reason}")


    async def shutdown(self, timeout: float) -> None:
        """Run the app's lifespan shutdown (FastAPI `lifespan=` after its yield, or
        `on_shutdown`) when the replica stops; waits at most `timeout` seconds."""
        if self._lifespan is None or self._lifespan.done():
            return
        reply: asyncio.Future[MutableMapping[str, Any]] = (
            asyncio.get_running_loop().create_future())
        self._replies.append(reply)
        self._inbox.put_nowait({"type": "lifespan.shutdown"})
        waits: set[asyncio.Future[Any]] = {reply, self._lifespan}
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if reply.done() and reply.result()["type"] == "lifespan.shutdown.failed":
            log.error("ingress app shutdown failed", detail=reply.result().get("message"))


def current_instance(scope: Scope) -> Any:
    """The deployment instance serving the request with this scope."""
    try:
        return scope[INSTANCE_SCOPE_KEY]
    except KeyError:
        raise RuntimeError(
            "this route is a method of a @serve.ingress deployment class; it runs only "
            "inside a replica of that deployment (no instance in the request scope)") from None


def _reduce_state(state: State) -> tuple[type[State], tuple[dict[str, Any]]]:
    return State, (dict(state._state),)


# The app travels with the deployment class, by value when the class does (notebooks,
# scripts). Starlette's `State` (`app.state`) cannot be unpickled as it is: its
# `__getattr__` recurses before its dict is restored. Teach pickle (and so cloudpickle) to
# rebuild it from its dict; this touches nothing else.
copyreg.pickle(State, _reduce_state)


def _is_builder(app: Any) -> bool:
    """A function of no arguments that returns the ASGI app (built in the replica)."""
    if not inspect.isfunction(app):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in inspect.signature(app).parameters.values())


def _class_functions(cls: type) -> set[Callable[..., Any]]:
    """The plain functions defined on the class and its bases (methods taking `self`)."""
    found: set[Callable[..., Any]] = set()
    for klass in cls.__mro__:
        found.update(v for v in vars(klass).values() if inspect.isfunction(v))
    return found


def _method_of(instance: Any, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` bound to the instance, taken from the instance's own class when it has it: a
    replica's class is a copy of the driver's (shipped by value), whose methods and their
    `super()` belong to the copy."""
    method = getattr(instance, func.__name__, None)
    if getattr(method, "__func__", None) is not None and (
            method.__func__.__qualname__ == func.__qualname__):  # type: ignore[union-attr]
        return method  # type: ignore[return-value]
    return func.__get__(instance, type(instance))  # type: ignore[no-any-return]


def _method_endpoint(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` with its first parameter (`self`) resolved, per request, to the instance."""
    from fastapi import Depends
    from starlette.requests import HTTPConnection

    # An HTTPConnection, not a Request: WebSocket routes resolve it too.
    def instance_of(connection: HTTPConnection) -> Any:
        return current_instance(connection.scope)

    # This module's annotations are strings FastAPI would resolve in its globals.
    instance_of.__annotations__ = {"connection": HTTPConnection, "return": Any}

    try:
        signature = inspect.signature(func, eval_str=True)
    except (NameError, TypeError):
        signature = inspect.signature(func)
    # FastAPI passes everything by keyword; keyword-only lets `self` have a default before
    # parameters that have none.
    first, *rest = (p.replace(kind=p.KEYWORD_ONLY) for p in signature.parameters.values())
    bound_self = first.replace(default=Depends(instance_of), annotation=Any)
    endpoint: Callable[..., Any]
    if inspect.iscoroutinefunction(func):
        async def endpoint(self: Any, **kwargs: Any) -> Any:
            return await _method_of(self, func)(**kwargs)
    else:
        def endpoint(self: Any, **kwargs: Any) -> Any:
            return _method_of(self, func)(**kwargs)
    functools.update_wrapper(endpoint, func)
    setattr(endpoint, "__signature__",  # noqa: B010 - a function has no such declared field
            signature.replace(parameters=[bound_self, *rest]))
    return endpoint


def bind_class_routes(app: Any, cls: type) -> int:
    """Re-register the FastAPI routes of `app` whose endpoints are methods of `cls` so that
    `self` is the serving instance; returns how many. Other routes stay as they are."""
    try:
        from fastapi.routing import APIRoute, APIWebSocketRoute
    except ImportError:  # not a FastAPI app, then
        return 0
    methods = _class_functions(cls)
    routes = getattr(getattr(app, "router", None), "routes", None)
    if routes is None:
        return 0
    rebound = 0
    for index, route in enumerate(routes):
        if (not isinstance(route, (APIRoute, APIWebSocketRoute))
                or route.endpoint not in methods):
            continue
        params = list(inspect.signature(type(route).__init__).parameters)[1:]
        options = {name: getattr(route, name) for name in params
                   if name not in ("path", "endpoint") and hasattr(route, name)}
        routes[index] = type(route)(route.path, _method_endpoint(route.endpoint), **options)
        rebound += 1
    # FastAPI caches its OpenAPI document; the re-registered routes change it.
    if rebound and hasattr(app, "openapi_schema"):
        app.openapi_schema = None
    return rebound


def ingress(app: Any) -> Callable[[type | None], type]:
    """Serve a deployment's HTTP requests through an ASGI app: `@serve.ingress(app)` under
    `@serve.deployment`.

    `app` is a FastAPI or Starlette app (or any ASGI callable), or a function of no
    arguments that returns one, called in each replica when it starts. FastAPI routes
    declared on the class as methods get `self`, the replica's instance. The app sees the
    request path with the application's route_prefix as `root_path` (its routes are
    written without the prefix); its status codes, headers, cookies and streaming bodies
    reach the client unchanged. Calling the decorator with no class
    (`serve.deployment(serve.ingress(app)())`) makes a class of its own.
    """
    if not callable(app):
        raise TypeError(f"@serve.ingress takes an ASGI app (FastAPI, Starlette, ...) or a "
                        f"function returning one, got {app!r}")
    builder = _is_builder(app)

    def decorate(cls: type | None = None) -> type:
        if cls is None:
            cls = type("ASGIIngress", (), {"__module__": __name__,
                                           "__doc__": "An ingress deployment of its app."})
        if not inspect.isclass(cls):
            kind = type(cls).__name__
            hint = (" Put @serve.ingress(app) below @serve.deployment."
                    if kind == "Deployment" else "")
            raise TypeError(f"@serve.ingress decorates a class, got {kind} {cls!r}.{hint}")
        if not builder:
            bind_class_routes(app, cls)

        def asgi_app(instance: Any) -> BoundIngress:
            built = instance.__dict__.get("_weir_built_asgi_app")
            if built is None:
                built = app() if builder else app
                instance.__dict__["_weir_built_asgi_app"] = built
            return BoundIngress(built, instance)

        cls.__weir_asgi_app__ = property(asgi_app)  # type: ignore[attr-defined]
        return cls

    return decorate
