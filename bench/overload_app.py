"""The overload benchmark's deployment: 2 replicas with bounded queues, each request a fixed
time of work (20 ms unless user_config says `service_s`), over HTTP or as the gRPC method
userdefined.Streamer/Echo (`bench/overload.py --protocol grpc`)."""

import asyncio
from typing import Any

from starlette.requests import Request

from tests.e2e.apps.streamer_pb2 import Number
from weir import serve

#: The gRPC servicer function that gives the ingress Echo's types.
SERVICER_FUNCTION = "tests.e2e.apps.streamer_pb2_grpc.add_StreamerServicer_to_server"


@serve.deployment(num_replicas=2, max_ongoing_requests=4, max_queued_requests=8)
class Work:
    def __init__(self) -> None:
        self.service_s = 0.02

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.service_s = float(config.get("service_s", self.service_s))

    async def __call__(self, request: Request) -> str:
        await asyncio.sleep(self.service_s)
        return "ok"

    async def Echo(self, request: Number) -> Number:
        await asyncio.sleep(self.service_s)
        return request


app = Work.bind()  # type: ignore[attr-defined]
