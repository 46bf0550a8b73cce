"""Apps the end-to-end tests deploy by import path."""

import os

from starlette.requests import Request
from starlette.responses import PlainTextResponse

from weir import serve


@serve.deployment(num_replicas=2)
class Echo:
    def __call__(self, request: Request) -> dict[str, object]:
        return {"pid": os.getpid(), "path": request.url.path,
                "query": dict(request.query_params)}


@serve.deployment
class Broken:
    def __init__(self) -> None:
        raise ValueError("constructor exploded on purpose")

    def __call__(self, request: Request) -> str:
        return "never"


@serve.deployment
class Returns:
    async def __call__(self, request: Request) -> object:
        kind = request.query_params.get("kind", "text")
        if kind == "text":
            return "plain text"
        if kind == "bytes":
            return b"\x00\x01raw"
        if kind == "json":
            return {"a": [1, 2]}
        if kind == "response":
            return PlainTextResponse("teapot", status_code=418, headers={"x-custom": "yes"})
        if kind == "raise":
            raise RuntimeError("user code failed")
        return object()  # not serializable over HTTP


@serve.deployment
def hello_function(request: Request) -> str:
    return "hello from a function"


echo = Echo.bind()
broken = Broken.bind()
returns = Returns.bind()
function_app = hello_function.bind()
