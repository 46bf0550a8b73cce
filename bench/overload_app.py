"""The overload benchmark's deployment: 20 ms of work, 2 replicas, bounded queues."""

import asyncio

from starlette.requests import Request

from weir import serve


@serve.deployment(num_replicas=2, max_ongoing_requests=4, max_queued_requests=8)
class Work:
    async def __call__(self, request: Request) -> str:
        await asyncio.sleep(0.02)
        return "ok"


app = Work.bind()  # type: ignore[attr-defined]
