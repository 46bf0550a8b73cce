"""An autoscaled deployment for the autoscaling tests: each call sleeps `?s=` seconds."""

import asyncio
import os

from starlette.requests import Request

from weir import serve


@serve.deployment(max_ongoing_requests=4,
                  autoscaling_config={"min_replicas": 1, "max_replicas": 3,
                                      "target_ongoing_requests": 1})
class Sleeper:
    async def __call__(self, request: Request) -> dict[str, int]:
        await asyncio.sleep(float(request.query_params.get("s", "0")))
        return {"pid": os.getpid()}


app = Sleeper.bind()
