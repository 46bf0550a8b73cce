"""Two composed deployments for the metrics and tracing tests: the ingress calls the leaf
through a handle; each logs a line per call. One call at a time, none queued: a second
concurrent request is shed."""

import asyncio
import logging

from starlette.requests import Request

from weir import serve
from weir.handle import DeploymentHandle

log = logging.getLogger("ray.serve")


@serve.deployment
class Leaf:
    def __call__(self, word: str) -> str:
        log.info("leaf working")
        return word.upper()


@serve.deployment(max_ongoing_requests=1, max_queued_requests=0)
class Front:
    def __init__(self, leaf: DeploymentHandle) -> None:
        self.leaf = leaf

    async def __call__(self, request: Request) -> str:
        log.info("front working")
        await asyncio.sleep(float(request.query_params.get("s", "0")))
        return await self.leaf.remote("hi")  # type: ignore[no-any-return]


app = Front.bind(Leaf.bind())
