"""Ray's dynamic request batching, with a batch_size_fn sizing batches by text length."""

import asyncio
import os

import requests
from starlette.requests import Request

from weir import serve
from weir.serve.handle import DeploymentHandle

URL = os.environ.get("EXAMPLE_URL", "http://localhost:8000")


def total_characters(texts: list[str]) -> int:
    assert all(isinstance(t, str) for t in texts), texts
    return sum(len(t) for t in texts)


@serve.deployment(max_ongoing_requests=16)
class Model:
    @serve.batch(max_batch_size=12, batch_wait_timeout_s=0.2, batch_size_fn=total_characters)
    async def handle_batch(self, texts: list[str]) -> list[dict[str, int]]:
        return [{"length": len(t), "batch": len(texts)} for t in texts]

    async def __call__(self, request: Request) -> dict[str, int]:
        return await self.handle_batch(request.query_params["text"])


handle: DeploymentHandle = serve.run(Model.bind(), name="batching", route_prefix="/batching")


async def main() -> list[dict[str, int]]:
    return list(await asyncio.gather(*[handle.handle_batch.remote("abcd") for _ in range(3)]))


results = asyncio.run(main())
# Three texts of four characters fill the 12 characters at once: one batch of three.
assert results == [{"length": 4, "batch": 3}] * 3, results
assert requests.get(f"{URL}/batching", params={"text": "hi"}).json()["length"] == 2
print("ok")
