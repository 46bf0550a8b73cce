"""One HTTP call inside the replica: run the user's code on the caller's own task and turn
the ASGI messages it sends into `CallReply`s, handed to `emit` as they are made.

The call runs in the task the transport gave it (a `Replica.Channel` call's task), not in a
task of its own fed through a queue: cancelling that task (the caller went away) cancels
the user's code at once, and a no-op call costs one task, not two plus two async
generators. The gRPC streaming methods, which must yield, wrap this in `emitted_replies`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import structlog

from weir.dataplane.transport import CallInbox
from weir.protos import weir_pb2 as pb
from weir.replica.user_callable import CallTimedOut, UserCallable, error_fields, within

log = structlog.get_logger("weir.replica")

#: Where a call's replies go, in order.
Emit = Callable[[pb.CallReply], None]


class ResponseReplies:
    """The ASGI `send` of one HTTP call: the response start waits for the first body chunk
    and goes with it (one reply for the common, non-streaming response); every later chunk
    is a reply of its own. Headers are added into the reply, not built and copied."""

    __slots__ = ("_emit", "_ongoing", "pending", "started")

    def __init__(self, emit: Emit, ongoing: Callable[[], int]) -> None:
        self._emit = emit
        self._ongoing = ongoing
        self.pending: pb.CallReply | None = None
        self.started = False

    async def send(self, message: MutableMapping[str, Any]) -> None:
        """ASGI `send`."""
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            start = pb.CallReply(outcome=pb.OK, status=message["status"],
                                 ongoing=self._ongoing() - 1)
            add = start.headers.add
            for name, value in message.get("headers", ()):
                add(name=bytes(name), value=bytes(value))
            self.pending = start
        elif kind == "http.response.body":
            reply, self.pending = self.pending, None
            if reply is None:
                reply = pb.CallReply(outcome=pb.OK)
            reply.body = message.get("body", b"")
            reply.more_body = message.get("more_body", False)
            self._emit(reply)

    def finish(self) -> None:
        """The app returned: a response start never followed by a body goes alone."""
        if self.pending is not None:
            self._emit(self.pending)
            self.pending = None


def _failed_before_start(exc: BaseException, ongoing: int) -> pb.CallReply:
    """The 500 a call gets when user code raised before it started its response."""
    fields = error_fields(exc)
    reply = pb.CallReply(outcome=pb.USER_ERROR, status=500, ongoing=ongoing,
                         body=f"Internal Server Error: {fields['error_type']}: "
                              f"{fields['error']}".encode(), **fields)
    reply.headers.add(name=b"content-type", value=b"text/plain; charset=utf-8")
    return reply


async def serve_http(user: UserCallable, request: pb.CallRequest, emit: Emit,
                     ongoing: Callable[[], int], timeout: float | None,
                     rest: asyncio.Queue[pb.BodyChunk | None] | None = None) -> None:
    """Run one admitted HTTP call to its end on the current task, its replies to `emit`.
    `timeout`: seconds the call may take (None: no limit); when it passes the user's code
    is cancelled, and a call that had not started its response gets TIMEOUT. Errors of the
    user's code become a 500 (before the response started) or end the response early."""
    replies = ResponseReplies(emit, ongoing)
    try:
        await within(timeout, user.call_http(request.method, request.http, replies.send, rest))
    except CallTimedOut:
        log.warning("request timed out; cancelled", request_id=request.request_id)
        if not replies.started:
            emit(pb.CallReply(outcome=pb.TIMEOUT, error="request timed out"))
        return
    except Exception as exc:
        if not replies.started:
            log.error("user code raised", request_id=request.request_id, exc_info=exc)
            emit(_failed_before_start(exc, ongoing() - 1))
        else:
            log.error("user code raised mid-response", request_id=request.request_id,
                      exc_info=exc)
        return
    replies.finish()


async def emitted_replies(run: Callable[[Emit], Awaitable[None]],
                          ) -> AsyncIterator[pb.CallReply]:
    """The replies `run` emits, as an async iterator, for gRPC's streaming methods: `run`
    goes in a task of its own, cancelled if the iterator is closed before the end (the
    caller went away)."""
    inbox: CallInbox[pb.CallReply | None] = CallInbox()

    async def runner() -> None:
        try:
            await run(inbox.put)
        finally:
            inbox.put(None)

    task = asyncio.get_running_loop().create_task(runner())
    try:
        while (reply := await inbox.get()) is not None:
            yield reply
        await task  # its error, if it failed
    finally:
        task.cancel()
