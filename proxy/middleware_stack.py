"""The proxy's app wrapped in the cluster's HTTP middlewares, rebuilt when they change.

Middlewares arrive with the route table (in its http_options), so a proxy that starts or
restarts gets them like any other option. Loading them imports modules or unpickles objects,
which blocks, so a new stack is built on a worker thread; requests that arrive meanwhile
wait for it rather than slip past a middleware that may be there to refuse them (an
authentication middleware, say).

If a new set cannot be loaded (the controller checked the import paths, but this process
may see other modules), the proxy keeps the stack it had and logs why; a proxy that never
had a working stack for the configured middlewares answers 503 naming the error, failing
closed rather than serving without them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import structlog

from weir.config.middlewares import ASGIApp, MiddlewareEntry, describe, wrap

log = structlog.get_logger("weir.proxy")


class MiddlewareStack:
    """The ASGI app to serve: `inner` wrapped in the configured middlewares."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner
        self.app: ASGIApp = inner
        #: Why the configured middlewares are not in force ("" when they are).
        self.error = ""
        self._entries: list[MiddlewareEntry] = []
        self._seen: object = None
        self._building: asyncio.Future[ASGIApp] | None = None
        #: Some configured set (maybe the empty one) is in force: keep it if a newer fails.
        self._applied = False
        #: False while the configured middlewares never loaded: fail closed.
        self._usable = True

    async def current(self, options: Mapping[str, Any] | None) -> ASGIApp | None:
        """The app for these http_options; None if their middlewares never loaded."""
        if options is not self._seen:
            self._seen = options
            entries = list((options or {}).get("middlewares") or [])
            if entries != self._entries:
                self._entries = entries
                self._start_build(entries)
            elif options is not None and self._building is None and self._usable:
                self._applied = True
        building = self._building
        if building is not None:
            # shield: a cancelled request must not cancel the build others wait for.
            await asyncio.wait([asyncio.shield(building)])
        return self.app if self._usable else None

    def _start_build(self, entries: list[MiddlewareEntry]) -> None:
        future = asyncio.ensure_future(asyncio.to_thread(wrap, self.inner, entries))
        self._building = future
        future.add_done_callback(lambda done: self._built(entries, done))

    def _built(self, entries: list[MiddlewareEntry], future: asyncio.Future[ASGIApp]) -> None:
        if future is not self._building:
            return  # a newer set of middlewares superseded this one
        self._building = None
        if future.cancelled():
            return
        exc = future.exception()
        names = [describe(e) for e in entries]
        if exc is None:
            self.app, self.error = future.result(), ""
            self._applied = self._usable = True
            log.info("http middlewares in force", middlewares=names)
            return
        self.error = str(exc)
        self._usable = self._applied
        log.error("http middlewares cannot be loaded; keeping the previous ones"
                  if self._applied else "http middlewares cannot be loaded; answering 503",
                  middlewares=names, error=self.error)
