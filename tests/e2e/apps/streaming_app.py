"""A deployment with all four kinds of gRPC method, served through the gRPC ingress."""

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc

from tests.e2e.apps.streamer_pb2 import Number
from weir import serve
from weir.serve.context import _get_serve_request_context
from weir.serve.grpc_util import RayServegRPCContext


async def _wait_for_file(path: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):  # noqa: ASYNC240 - a test marker, on a local disk
            return True
        await asyncio.sleep(0.01)
    return False


@serve.deployment(max_ongoing_requests=1, max_queued_requests=0)
class Streamer:
    def Echo(self, request: Number, grpc_context: RayServegRPCContext) -> Number:
        """Unary, sync: answers with the request id it sees; `fail` raises, `missing`
        ends NOT_FOUND through the context."""
        if request.text == "fail":
            raise ValueError("boom")
        if request.text == "missing":
            grpc_context.set_code(grpc.StatusCode.NOT_FOUND)
            grpc_context.set_details("no such number")
            return Number()
        metadata = dict(grpc_context.invocation_metadata())
        grpc_context.set_trailing_metadata([("echoed", str(metadata.get("tag", "")))])
        request_id = _get_serve_request_context().request_id
        return Number(value=request.value, text=request_id)

    async def Count(self, request: Number) -> AsyncIterator[Number]:
        """Server streaming: `value` numbers. With `text` a path, the second waits for that
        file (the client makes it on receiving the first); in `finally` it leaves
        `<text>.closed` behind, so a test sees a cancelled stream end."""
        try:
            for i in range(request.value):
                if i == 1 and request.text:
                    if not await _wait_for_file(request.text):
                        yield Number(value=-1, text="the client never saw the first message")
                        return
                yield Number(value=i)
                await asyncio.sleep(0.01)
        finally:
            if request.text:
                Path(request.text + ".closed").touch()  # noqa: ASYNC240 - a test marker

    async def Sum(self, requests: AsyncIterator[Number]) -> Number:
        """Client streaming."""
        total = 0
        async for request in requests:
            total += request.value
        return Number(value=total)

    def Chat(self, requests: Iterator[Number]) -> Iterator[Number]:
        """Bidirectional, sync: each message answered at once, doubled."""
        for request in requests:
            yield Number(value=request.value * 2, text=request.text)


app = Streamer.bind()
