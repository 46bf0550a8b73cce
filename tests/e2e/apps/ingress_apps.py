"""Deployments behind `@serve.ingress`, for tests/e2e/test_ingress.py."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from weir import serve

# --- Starlette: plain function routes -------------------------------------------------


async def hello(request: Request) -> Response:
    return PlainTextResponse(f"hello {request.path_params['name']} from {os.getpid()}")


async def create(request: Request) -> Response:
    body = await request.json()
    location = str(request.url_for("item", item_id=body["id"]))
    response = JSONResponse({"created": body}, status_code=201,
                            headers={"x-created-by": "starlette", "location": location})
    response.set_cookie("session", "s3cr3t", httponly=True)
    response.set_cookie("theme", "dark")
    return response


async def item(request: Request) -> Response:
    return JSONResponse({"item_id": request.path_params["item_id"],
                         "root_path": request.scope.get("root_path"),
                         "query": dict(request.query_params)})


async def numbers(request: Request) -> Response:
    async def chunks() -> AsyncIterator[str]:
        for i in range(int(request.query_params.get("n", "3"))):
            yield f"{i}\n"

    return StreamingResponse(chunks(), media_type="text/plain",
                             headers={"x-stream": "yes"})


starlette_app = Starlette(routes=[
    Route("/hello/{name}", hello),
    Route("/items", create, methods=["POST"]),
    Route("/items/{item_id:int}", item, name="item"),
    Route("/numbers", numbers),
])


@serve.deployment
@serve.ingress(starlette_app)
class StarletteIngress:
    def __call__(self, request: Request) -> str:
        return "never reached over HTTP: the ingress app serves every path"


# --- FastAPI: routes are methods using the instance ----------------------------------

@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
    # Runs in the replica when it starts; what it yields is in every request's state.
    yield {"model": f"loaded in {os.getpid()}"}
    # Runs when the replica stops: leave a mark for the test to find.
    await asyncio.to_thread(Path(shutdown_mark(os.getpid())).write_text, "shut down")


def shutdown_mark(pid: int) -> str:
    """The file the FastAPI app's lifespan writes when the replica `pid` stops."""
    return os.path.join(tempfile.gettempdir(), f"weir-test-lifespan-{pid}")


api = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@api.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


class Inventory:
    def total(self, items: dict[int, Item]) -> float:
        return sum(i.price for i in items.values())


@serve.deployment
@serve.ingress(api)
class FastAPIIngress(Inventory):
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting
        self.items: dict[int, Item] = {}

    @api.get("/greet/{name}")
    def greet(self, name: str, excited: bool = False) -> dict[str, str]:
        return {"message": f"{self.greeting}, {name}{'!' if excited else '.'}"}

    @api.put("/items/{item_id}", status_code=201)
    async def put_item(self, item_id: int, item: Item) -> dict[str, object]:
        if item.price < 0:
            raise HTTPException(status_code=422, detail="price must be >= 0")
        self.items[item_id] = item
        return {"item_id": item_id, "count": len(self.items), **item.model_dump(),
                "total": super().total(self.items)}

    @api.get("/items/{item_id}")
    async def get_item(self, item_id: int) -> Item:
        if item_id not in self.items:
            raise HTTPException(status_code=404, detail=f"no item {item_id}",
                                headers={"x-missing": str(item_id)})
        return self.items[item_id]

    @api.get("/model")
    def model(self, request: Request) -> str:
        return str(request.state.model)

    @api.get("/where")
    def where(self, request: Request) -> dict[str, str]:
        return {"path": request.url.path, "root_path": request.scope["root_path"],
                "docs": str(request.url_for("greet", name="x"))}


# --- A builder: the app is made in the replica ---------------------------------------


def build_app() -> FastAPI:
    built = FastAPI()

    @built.get("/")
    def root() -> dict[str, int]:
        return {"built_in": os.getpid()}

    return built


starlette_ingress = StarletteIngress.bind()
fastapi_ingress = FastAPIIngress.bind("Hello")
built_ingress = serve.deployment(serve.ingress(build_app)()).bind()
