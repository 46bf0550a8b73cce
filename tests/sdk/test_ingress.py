"""`@serve.ingress` in one process: route binding and shipping, played through ASGI."""

# No `from __future__ import annotations`: FastAPI resolves string annotations in the module's
# globals, where the models defined inside the test functions are not.
from typing import Any

import cloudpickle
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.testclient import TestClient

from weir import serve


def _client(instance: Any, root_path: str = "") -> TestClient:
    """A client of the instance's ingress, played as the replica plays it."""
    return TestClient(instance.__weir_asgi_app__, root_path=root_path)


def _counter_class() -> type:
    api = FastAPI()

    class Body(BaseModel):
        step: int

    class Base:
        def scale(self, n: int) -> int:
            return n

    @serve.ingress(api)
    class Counter(Base):
        def __init__(self, start: int) -> None:
            self.value = start

        @api.post("/add/{who}")
        async def add(self, who: str, body: Body, times: int = 1) -> dict[str, Any]:
            self.value += super().scale(body.step) * times
            return {"who": who, "value": self.value}

        @api.get("/value")
        def get(self) -> int:
            return self.value

    return Counter


def test_class_routes_get_their_own_instance() -> None:
    counter = _counter_class()
    a, b = counter(0), counter(100)
    with _client(a, "/c") as ca, _client(b, "/c") as cb:
        assert ca.post("/c/add/ann?times=2", json={"step": 5}).json() == {
            "who": "ann", "value": 10}
        assert cb.post("/c/add/bob", json={"step": 1}).json() == {"who": "bob", "value": 101}
        assert (ca.get("/c/value").json(), cb.get("/c/value").json()) == (10, 101)
        assert ca.post("/c/add/x", json={"step": "no"}).status_code == 422


def test_self_is_not_a_parameter_in_openapi() -> None:
    with _client(_counter_class()(0)) as client:
        operation = client.get("/openapi.json").json()["paths"]["/add/{who}"]["post"]
    assert [p["name"] for p in operation["parameters"]] == ["who", "times"]


def test_a_locally_defined_ingress_ships_by_value() -> None:
    counter = _counter_class()
    counter.__module__ = "__main__"  # as in a notebook: no module to import it from
    shipped = cloudpickle.loads(cloudpickle.dumps(counter))
    with _client(shipped(1)) as client:
        assert client.post("/add/z", json={"step": 2}).json() == {"who": "z", "value": 3}


def test_starlette_state_survives_shipping() -> None:
    app = Starlette()
    app.state.model = "weights"
    copy = cloudpickle.loads(cloudpickle.dumps(app))
    assert copy.state.model == "weights"


def test_ingress_is_applied_under_deployment() -> None:
    app = FastAPI()

    @serve.deployment
    class Late:
        pass

    with pytest.raises(TypeError, match=r"below @serve\.deployment"):
        serve.ingress(app)(Late)
    with pytest.raises(TypeError, match="ASGI app"):
        serve.ingress(42)


def test_lifespan_startup_runs_and_its_state_reaches_requests() -> None:
    import asyncio
    from contextlib import asynccontextmanager

    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield {"model": "loaded"}

    async def model(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.state.model)

    @serve.ingress(Starlette(routes=[Route("/", model)], lifespan=lifespan))
    class WithLifespan:
        pass

    bound = WithLifespan().__weir_asgi_app__

    async def start_and_call() -> list[Any]:
        await bound.startup()
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/", "root_path": "",
                 "query_string": b"", "headers": [], "asgi": {"version": "3.0"}}
        await bound(scope, receive, send)
        return sent

    sent = asyncio.run(start_and_call())
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == b"loaded"


def test_a_failing_startup_fails_and_an_app_without_lifespan_starts() -> None:
    import asyncio
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def broken(app: Starlette) -> Any:
        raise RuntimeError("no weights")
        yield

    @serve.ingress(Starlette(lifespan=broken))
    class Broken:
        pass

    with pytest.raises(RuntimeError, match="startup failed: RuntimeError: no weights"):
        asyncio.run(Broken().__weir_asgi_app__.startup())

    async def bare_asgi(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http", "no lifespan here"

    @serve.ingress(bare_asgi)
    class Bare:
        pass

    asyncio.run(Bare().__weir_asgi_app__.startup())
