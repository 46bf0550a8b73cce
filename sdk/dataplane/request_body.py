"""An HTTP request body that is still arriving while its call is routed and runs.

The proxy adds chunks as the client sends them; the call's first message carries whatever
had come in by the time the call went on the wire (`seal`), the rest follows on the call.
Until the call is sealed, chunks are simply folded into the first message: a small body
whose end the server delivered at once (hypercorn hands a body and its end as two ASGI
messages) still travels as one message on the multiplexed stream, exactly as a whole one.

Retries: a call is sent again to another replica only if it never started. For a body that
streams, that means the replica refused it before any chunk past the first message was
handed over: the transport takes chunks (`rest`) only after the replica said it admitted
the call, so a refused call still has its whole first message and nothing else was sent.
Once `started`, the body is gone and the call is never retried.

A handler may answer before reading the whole body: the call is over while the client is
still sending. The proxy then `discard`s what still comes (read, not kept) until the body
ends, so that the client, which often reads nothing before it has sent everything, gets
the answer instead of a connection closed under it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from weir.protos import weir_pb2 as pb


class RequestBody:
    """The body of one HTTP call, fed by the proxy and drained by the transport."""

    def __init__(self, http: pb.HttpRequest, first: bytes) -> None:
        self._http = http
        self._head = [first]
        self._complete = False
        self._sealed = False
        self._rest: asyncio.Queue[tuple[bytes, bool]] = asyncio.Queue()
        #: A chunk past the first message was handed to a replica: never retry the call.
        self.started = False
        #: Set once the client sent the body's last chunk.
        self.ended = asyncio.Event()
        self._discarding = False

    def add(self, chunk: bytes, last: bool) -> None:
        """The client sent another chunk (`last`: the body ends with it)."""
        if last:
            self.ended.set()
        if self._discarding:
            return
        if not self._sealed:
            self._head.append(chunk)
            self._complete = last
        else:
            self._rest.put_nowait((chunk, last))

    def seal(self) -> bool:
        """Fix what the call's first message carries; True if more of the body follows.
        Idempotent: a retried call sends the same first message."""
        if not self._sealed:
            self._sealed = True
            self._http.body = b"".join(self._head)
            self._http.more_body = not self._complete
            self._head = []
        return self._http.more_body

    def discard(self) -> None:
        """The call is over: drop the chunks not yet taken and every chunk still to come."""
        self._discarding = True
        while not self._rest.empty():
            self._rest.get_nowait()

    async def rest(self) -> AsyncIterator[tuple[bytes, bool]]:
        """The chunks after the first message, as `(data, last)`, as they arrive."""
        self.started = True
        while True:
            chunk, last = await self._rest.get()
            yield chunk, last
            if last:
                return
