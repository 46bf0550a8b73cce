"""The overload benchmark's deployment: 2 replicas with bounded queues, each request a fixed
time of work (20 ms unless user_config says `service_s`)."""

import asyncio
from typing import Any

from starlette.requests import Request

from weir import serve


@serve.deployment(num_replicas=2, max_ongoing_requests=4, max_queued_requests=8)
class Work:
    def __init__(self) -> None:
        self.service_s = 0.02

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.service_s = float(config.get("service_s", self.service_s))

    async def __call__(self, request: Request) -> str:
        await asyncio.sleep(self.service_s)
        return "ok"


app = Work.bind()  # type: ignore[attr-defined]
