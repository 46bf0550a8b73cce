"""proxy.middleware_stack: rebuilt only when the middlewares change, off the loop; keeps the
last good stack when a new one fails, fails closed when none ever loaded."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.middleware.cors import CORSMiddleware

from weir.proxy.middleware_stack import MiddlewareStack

CORS = "starlette.middleware.cors:CORSMiddleware"
BAD = "no_such_module:Middleware"


async def inner(scope: Any, receive: Any, send: Any) -> None:
    """The proxy's own app."""


def test_no_middlewares_is_the_bare_app() -> None:
    async def main() -> None:
        stack = MiddlewareStack(inner)
        assert await stack.current(None) is inner
        assert await stack.current({"middlewares": []}) is inner

    asyncio.run(main())


def test_rebuilt_only_when_the_middlewares_change() -> None:
    async def main() -> None:
        stack = MiddlewareStack(inner)
        first = await stack.current({"middlewares": [CORS], "port": 1})
        assert isinstance(first, CORSMiddleware) and first.app is inner
        # A new table with the same middlewares keeps the same stack object.
        assert await stack.current({"middlewares": [CORS], "port": 2}) is first
        assert await stack.current({"middlewares": []}) is inner

    asyncio.run(main())


def test_a_bad_new_set_keeps_the_last_good_stack() -> None:
    async def main() -> None:
        stack = MiddlewareStack(inner)
        good = await stack.current({"middlewares": [CORS]})
        assert await stack.current({"middlewares": [CORS, BAD]}) is good
        assert "no_such_module" in stack.error

    asyncio.run(main())


def test_a_proxy_that_never_loaded_its_middlewares_fails_closed() -> None:
    async def main() -> None:
        stack = MiddlewareStack(inner)
        assert await stack.current({"middlewares": [BAD]}) is None
        assert "no_such_module" in stack.error
        # Fixed config: serving again.
        assert isinstance(await stack.current({"middlewares": [CORS]}), CORSMiddleware)
        assert stack.error == ""

    asyncio.run(main())


def test_requests_arriving_during_a_build_wait_for_it() -> None:
    async def main() -> None:
        stack = MiddlewareStack(inner)
        options = {"middlewares": [CORS]}
        apps = await asyncio.gather(*(stack.current(options) for _ in range(5)))
        assert all(isinstance(a, CORSMiddleware) for a in apps)
        assert len({id(a) for a in apps}) == 1

    asyncio.run(main())
