"""The proxies' HTTP middlewares: how they are written in `http_options.middlewares` and how
a proxy turns them into the ASGI app it serves.

A proxy is another process than the one that configured it, so middlewares travel in the
goal state (etcd -> leader -> route table) in one of two forms:

- an import path (`"pkg.mod:attr"`, from a config file) naming a middleware class, called
  with the app alone, or a starlette `Middleware(cls, *args, **kwargs)` object, which
  carries its own options;
- an object given in Python (`serve.start(http_middlewares=[Middleware(...)])`), shipped by
  value: `{"name": ..., "cloudpickle": <base64>}`; `name` is for people reading
  `weir config`.

The order is Ray Serve's: each middleware wraps the app built so far, so the last one listed
is the outermost (the first to see a request). As in Ray they wrap everything the proxy
answers, `/-/healthz` and `/-/routes` included.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cloudpickle
from starlette.middleware import Middleware

#: The ASGI application a middleware wraps (typed loosely: user middlewares vary).
ASGIApp = Callable[..., Any]
#: One entry of `http_options.middlewares`: an import path or a pickled object.
MiddlewareEntry = str | Mapping[str, str]


class MiddlewareError(Exception):
    """A middleware entry could not be loaded or applied; the message names the entry."""


def describe(entry: MiddlewareEntry) -> str:
    """How an entry is named in errors and logs."""
    if isinstance(entry, str):
        return repr(entry)
    return f"{entry.get('name') or 'object'!s} (given in Python)"


def wrapper_of(obj: Any) -> Callable[[ASGIApp], ASGIApp]:
    """The function wrapping an app in `obj`: a starlette `Middleware` (its class with its
    options) or a middleware class / factory called with the app alone. TypeError else."""
    if isinstance(obj, Middleware):
        cls, args, kwargs = obj
        return lambda app: cls(app, *args, **kwargs)
    if callable(obj):
        return obj  # type: ignore[no-any-return]
    raise TypeError(f"a {type(obj).__name__} is not a middleware: give a middleware class or "
                    "a starlette.middleware.Middleware(cls, **options)")


def pickled_entry(obj: Any) -> dict[str, str]:
    """The http_options entry of a middleware object given in Python (checked first)."""
    wrapper_of(obj)
    cls = obj.cls if isinstance(obj, Middleware) else obj
    name = getattr(cls, "__qualname__", type(cls).__name__)
    try:
        data = cloudpickle.dumps(obj)
    except Exception as exc:
        raise TypeError(f"middleware {name} cannot be serialized for the proxies: {exc}") from exc
    return {"name": name, "cloudpickle": base64.b64encode(data).decode()}


def check_entry_shape(entry: Any) -> MiddlewareEntry:
    """Validate the form of one entry without loading it (ValueError if malformed)."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Mapping) and set(entry) == {"name", "cloudpickle"} and all(
            isinstance(v, str) for v in entry.values()):
        try:
            base64.b64decode(entry["cloudpickle"], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"cloudpickle is not base64: {exc}") from None
        return entry
    raise ValueError('must be an import path "module.sub:attribute" (or, written by '
                     'serve.start, {"name": ..., "cloudpickle": ...})')


def load_entry(entry: MiddlewareEntry) -> Callable[[ASGIApp], ASGIApp]:
    """Import or unpickle one entry; MiddlewareError naming it if that fails.

    Blocking (imports run module code): call it off the event loop.
    """
    from weir.import_path import import_attr

    try:
        if isinstance(entry, str):
            obj = import_attr(entry)
        else:
            obj = cloudpickle.loads(base64.b64decode(entry["cloudpickle"]))
        return wrapper_of(obj)
    except Exception as exc:
        raise MiddlewareError(f"middleware {describe(entry)} cannot be loaded: "
                              f"{type(exc).__name__}: {exc}") from exc


def wrap(app: ASGIApp, entries: Sequence[MiddlewareEntry]) -> ASGIApp:
    """`app` wrapped in every middleware, the last listed outermost (Ray Serve's order).

    Blocking: call it off the event loop. MiddlewareError names the entry that failed.
    """
    for i, entry in enumerate(entries):
        wrapper = load_entry(entry)
        try:
            app = wrapper(app)
        except Exception as exc:
            raise MiddlewareError(f"middleware {i} {describe(entry)} raised when applied: "
                                  f"{type(exc).__name__}: {exc}") from exc
    return app
