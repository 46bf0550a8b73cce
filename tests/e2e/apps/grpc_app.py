"""A deployment served through the gRPC ingress with the user's own protos."""

import asyncio

from tests.e2e.apps import greeter_pb2
from weir import serve


@serve.deployment(max_ongoing_requests=1, max_queued_requests=1)
class GreeterDeployment:
    async def Greet(self, request: greeter_pb2.GreetRequest) -> greeter_pb2.GreetReply:
        if request.sleep_s:
            await asyncio.sleep(request.sleep_s)
        return greeter_pb2.GreetReply(message=f"Hello, {request.name}!")


app = GreeterDeployment.bind()
