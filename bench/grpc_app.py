"""The deployment the gRPC benchmark calls through Weir's ingress, and the same servicer
for the bare grpc.aio baseline: unary echo, and a server stream of `value` messages."""

from __future__ import annotations

from collections.abc import AsyncIterator

from tests.e2e.apps.streamer_pb2 import Number
from tests.e2e.apps.streamer_pb2_grpc import StreamerServicer
from weir import serve

SERVICER_FUNCTION = "tests.e2e.apps.streamer_pb2_grpc.add_StreamerServicer_to_server"


class BenchServicer(StreamerServicer):
    """Echo and Count, plain async (the bare baseline's servicer, and the deployment's)."""

    async def Echo(self, request: Number, context: object = None) -> Number:
        return request

    async def Count(self, request: Number,
                    context: object = None) -> AsyncIterator[Number]:
        message = Number(text="x" * 16)
        for i in range(request.value):
            message.value = i
            yield message


@serve.deployment(max_ongoing_requests=1000, max_queued_requests=-1)
class BenchStreamer(BenchServicer):
    """The same two methods as a Weir deployment."""


app = BenchStreamer.bind()
