"""Composed deployments for the handle tests."""

import asyncio
import os

from starlette.requests import Request

from weir import serve
from weir.handle import DeploymentHandle

#: Calls of Doubler.slow cancelled in this replica process.
CANCELLED = [0]


@serve.deployment(num_replicas=2)
class Doubler:
    def __call__(self, x: int) -> int:
        return 2 * x

    def pid(self) -> int:
        return os.getpid()

    def fail(self) -> None:
        raise KeyError("missing on purpose")

    async def slow(self, seconds: float) -> str:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            CANCELLED[0] += 1
            raise
        return "done"

    def cancelled_count(self) -> int:
        return CANCELLED[0]

    def count_to(self, n: int):  # type: ignore[no-untyped-def]
        yield from range(n)


@serve.deployment
class Incrementer:
    async def __call__(self, x: int) -> int:
        return x + 1


@serve.deployment
class Ingress:
    """Fans out to two deployments; holds handles nested in a list and a dict."""

    def __init__(self, handles: list[DeploymentHandle], by_name: dict[str, DeploymentHandle]):
        self.doubler, self.incrementer = handles
        self.by_name = by_name

    async def __call__(self, request: Request) -> dict[str, int]:
        x = int(request.query_params.get("x", "1"))
        doubled, incremented = await asyncio.gather(self.doubler.remote(x),
                                                    self.incrementer.remote(x))
        # Chaining: a response passed as an argument is resolved first.
        chained = await self.by_name["inc"].remote(self.by_name["double"].remote(x))
        return {"doubled": doubled, "incremented": incremented, "chained": chained}

    def sync_path(self, x: int) -> int:
        return self.doubler.remote(x).result(timeout_s=10) + 1  # type: ignore[no-any-return]


doubler = Doubler.bind()
incrementer = Incrementer.bind()
app = Ingress.bind([doubler, incrementer], {"double": doubler, "inc": incrementer})


@serve.deployment
class Lookup:
    """Finds other deployments by name from inside a replica."""

    async def __call__(self, request: Request) -> dict[str, int]:
        doubler = serve.get_deployment_handle("Doubler", "composed")
        ingress = serve.get_app_handle("composed")
        return {"doubled": await doubler.remote(4),
                "via_app": await ingress.sync_path.remote(1)}


lookup = Lookup.bind()
