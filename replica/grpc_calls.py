"""The replica's side of calls from the gRPC ingress: decode with the user's protos, run
the method by its kind, encode, and end with the status the method chose.

The four kinds, as in Ray: a unary method takes a message and returns one; a
server-streaming one is a (sync or async) generator of messages; a client-streaming one
takes an async iterator of messages (`gRPCInputStream`) and returns one; a bidirectional
one takes the iterator and yields. A method that declares `grpc_context` gets the call's
`RayServegRPCContext`; the code, details and trailing metadata set on it travel back in
the call's last reply, which the ingress turns into the call's status.

Streamed calls come on CallBodyStream: the request messages follow the call as body
chunks, read only as the method asks for them, and each response message goes back as
soon as it is yielded; gRPC's flow control paces both ends.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc

from weir.grpc_metadata import metadata_headers, metadata_pairs
from weir.protos import weir_pb2 as pb
from weir.replica.grpc_codecs import MethodCodec
from weir.replica.user_callable import UserCallable, error_fields
from weir.serve.grpc_util import GRPC_CONTEXT_PARAMETER, RayServegRPCContext, gRPCInputStream


def takes_grpc_context(fn: Callable[..., Any]) -> bool:
    """True if the method declares Ray's `grpc_context` parameter."""
    # Asked on every call; a bound method is a new object each time, its function is not.
    target = getattr(fn, "__func__", fn)
    try:
        return _declares_context(target)
    except TypeError:  # an unhashable callable object: not cached
        return _declares_context.__wrapped__(target)


@functools.lru_cache(maxsize=1024)
def _declares_context(fn: Callable[..., Any]) -> bool:
    try:
        return GRPC_CONTEXT_PARAMETER in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def call_context(request: pb.CallRequest) -> RayServegRPCContext:
    """The context a method sees for this call: its metadata, peer and deadline."""
    grpc_request = request.grpc
    return RayServegRPCContext(
        invocation_metadata=metadata_pairs(grpc_request.metadata),
        peer=grpc_request.peer, deadline=request.deadline or None)


def final_reply(context: RayServegRPCContext, error: BaseException | None = None,
                body: bytes = b"", ongoing: int = 0) -> pb.CallReply:
    """The reply that ends a call: the code the method set (else UNKNOWN after an error,
    OK otherwise), its details (else the error's type and message) and trailing metadata.
    `body`: the response message of a call with a unary response."""
    code = context.code()
    if code is None:
        code = grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK
    details = context.details()
    fields: dict[str, Any] = {}
    if error is not None:
        fields = error_fields(error)
        details = details or f"{fields['error_type']}: {fields['error']}"
    return pb.CallReply(
        outcome=pb.USER_ERROR if error is not None else pb.OK, body=body, ongoing=ongoing,
        grpc_code=code.value[0], grpc_details=details,
        grpc_trailing_metadata=metadata_headers(context.trailing_metadata()),
        **fields)


class _BlockingMessages(Iterator[Any]):
    """The request messages for a sync method running in a thread: each `next` waits on
    the replica's event loop for the next message."""

    def __init__(self, messages: AsyncIterator[Any], loop: asyncio.AbstractEventLoop) -> None:
        self._messages = messages
        self._loop = loop

    async def _next(self) -> Any:
        return await anext(self._messages)

    def __next__(self) -> Any:
        try:
            return asyncio.run_coroutine_threadsafe(self._next(), self._loop).result()
        except StopAsyncIteration:
            raise StopIteration from None


async def _messages(first: pb.GrpcRequest, parts: AsyncIterator[pb.CallPart] | None,
                    codec: MethodCodec) -> AsyncIterator[Any]:
    """The call's request messages, decoded, read from the caller only when asked for."""
    if not first.more_messages or parts is None:
        yield codec.deserialize(first.payload)
        return
    async for part in parts:
        if part.HasField("body"):
            yield codec.deserialize(part.body.data)
            if part.body.last:
                return


class GrpcCall:
    """One call from the gRPC ingress to one method of the user's deployment."""

    def __init__(self, user: UserCallable, codec: MethodCodec, request: pb.CallRequest,
                 parts: AsyncIterator[pb.CallPart] | None = None) -> None:
        self.user = user
        self.codec = codec
        self.fn = user.method(request.method)
        self.context = call_context(request)
        self.path = request.grpc.method_path
        self.messages = _messages(request.grpc, parts, codec)
        self.kwargs = ({GRPC_CONTEXT_PARAMETER: self.context}
                       if takes_grpc_context(self.fn) else {})

    async def _argument(self) -> Any:
        """The method's first argument: the message, or the stream of them."""
        if self.codec.client_streaming:
            if inspect.iscoroutinefunction(self.fn) or inspect.isasyncgenfunction(self.fn):
                return gRPCInputStream(self.messages)
            return _BlockingMessages(self.messages, asyncio.get_running_loop())
        message = await anext(self.messages, None)
        if message is None:
            raise ValueError(f"{self.path}: the client sent no request message")
        return message

    async def unary(self) -> Any:
        """Run a method with a unary response; returns its response message."""
        return await self.user.invoke(self.fn, await self._argument(), **self.kwargs)

    async def replies(self, ongoing: Callable[[], int]) -> AsyncIterator[pb.CallReply]:
        """Run the method and yield its response messages, one reply each as it comes,
        then the reply with the call's status."""
        try:
            # Every response message is a reply of its own, the status another: an empty
            # message (b"") and no message must not look alike.
            if not self.codec.server_streaming:
                yield pb.CallReply(outcome=pb.OK, body=self.codec.serialize(await self.unary()),
                                   more_body=True)
            else:
                argument = await self._argument()
                async for item in self.user.iterate(self.fn, argument, **self.kwargs):
                    yield pb.CallReply(outcome=pb.OK, body=self.codec.serialize(item),
                                       more_body=True)
        except Exception as exc:
            yield final_reply(self.context, exc, ongoing=ongoing() - 1)
            return
        yield final_reply(self.context, ongoing=ongoing() - 1)


def _unknown_method(path: str) -> pb.CallReply:
    details = (f"no gRPC method {path} on this deployment: add its servicer function to "
               "grpc_options.grpc_servicer_functions")
    return pb.CallReply(outcome=pb.USER_ERROR, error=details, error_type="LookupError",
                        grpc_code=grpc.StatusCode.UNIMPLEMENTED.value[0], grpc_details=details)


async def unary_reply(user: UserCallable, codecs: dict[str, MethodCodec],
                      request: pb.CallRequest, ongoing: Callable[[], int]) -> pb.CallReply:
    """A unary call (its response message in `body`), or its error, as one reply. The
    caller bounds its time (`asyncio.timeout`): cancelled, it raises CancelledError."""
    codec = codecs.get(request.grpc.method_path)
    if codec is None:
        return _unknown_method(request.grpc.method_path)
    call = GrpcCall(user, codec, request)
    try:
        result = await call.unary()
    except Exception as exc:
        return final_reply(call.context, exc, ongoing=ongoing() - 1)
    return final_reply(call.context, body=codec.serialize(result), ongoing=ongoing() - 1)


async def streamed_replies(user: UserCallable, codecs: dict[str, MethodCodec],
                           request: pb.CallRequest, parts: AsyncIterator[pb.CallPart],
                           ongoing: Callable[[], int]) -> AsyncIterator[pb.CallReply]:
    """A call of any kind on CallBodyStream: its response messages, then its status."""
    codec = codecs.get(request.grpc.method_path)
    if codec is None:
        yield _unknown_method(request.grpc.method_path)
        return
    async for reply in GrpcCall(user, codec, request, parts).replies(ongoing):
        yield reply
