"""Slow deployments for load shedding and timeout tests."""

import asyncio
import time

from starlette.requests import Request

from weir import serve


@serve.deployment(max_ongoing_requests=2, max_queued_requests=2)
class SlowDeployment:
    """The seed's example: 2 s per request."""

    def __call__(self, request: Request) -> str:
        time.sleep(2)
        return "Hello!"


@serve.deployment(max_ongoing_requests=4)
class Cancellable:
    """Counts requests whose work was cancelled."""

    def __init__(self) -> None:
        self.cancelled = 0
        self.finished = 0

    async def __call__(self, request: Request) -> dict[str, int]:
        if request.url.path.endswith("/stats"):
            return {"cancelled": self.cancelled, "finished": self.finished}
        try:
            await asyncio.sleep(float(request.query_params.get("s", "5")))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1
        return {"cancelled": self.cancelled, "finished": self.finished}


slow = SlowDeployment.bind()
cancellable = Cancellable.bind()
