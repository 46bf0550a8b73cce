"""The cluster token: the one home of who may call Weir's own gRPC servers.

Design. Handles send cloudpickled arguments and replicas unpickle them, so whoever can reach
a replica's data plane (or a controller's admin API) can run code there. On one host every
server listens on loopback and that is the fence; across hosts it is not. Every process of
a cluster shares one secret, the cluster token, and every call between them carries it in
the metadata key `weir-token`:

- servers (`server`) get an interceptor that refuses a call without the right token with
  UNAUTHENTICATED before its handler runs, so no request message is even parsed, let alone
  unpickled; the comparison takes constant time (`hmac.compare_digest`);
- clients get the token from the channel itself (`channel`, `sync_channel`), which adds it
  to every call, so no call site can forget it;
- the token comes from one place (`cluster_token`): WEIR_TOKEN, else the running
  `weir start` cluster's state file, else none. Processes Weir starts always get WEIR_TOKEN
  in their environment, even empty, so they never guess from a state file.

An empty token turns the check off on both sides (a single host on loopback, as before).
The public ingresses (HTTP, and the gRPC ingress serving users' protos) stay open: they
never unpickle.
"""

from __future__ import annotations

import collections
import hmac
import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import structlog

log = structlog.get_logger("weir.auth")

#: The metadata key every call inside a cluster carries its token in.
TOKEN_METADATA_KEY = "weir-token"
#: The environment variable a process reads its cluster token from.
TOKEN_ENV = "WEIR_TOKEN"
#: The status text of a refused call (the client sees it; it names the fix).
REFUSED_DETAILS = ("missing or wrong cluster token: set WEIR_TOKEN (or --token) to the "
                   "token the cluster was started with")

ChannelOptions = Sequence[tuple[str, Any]]


def cluster_token(explicit: str | None = None) -> str:
    """This process's cluster token: `explicit` (a `--token` flag), else WEIR_TOKEN (set but
    empty means no token), else the token of the running `weir start` cluster in the state
    file, else '' (no token: the check is off).

    Reads the state file only when WEIR_TOKEN is unset, which is never the case in a process
    Weir started (a controller, proxy or replica), only in the CLI or a user's script.
    """
    if explicit is not None:
        return explicit
    from_env = os.environ.get(TOKEN_ENV)
    if from_env is not None:
        return from_env
    from weir.cli.cluster_state import running_cluster

    info = running_cluster()
    return info.token if info is not None else ""


def pin_token() -> str:
    """Resolve the token once and put it in this process's environment, so that its
    servers, its channels and the processes it starts all use the same one. Returns it."""
    token = cluster_token()
    os.environ[TOKEN_ENV] = token
    return token


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe): for a cluster started without one."""
    return secrets.token_urlsafe(32)


# --- server side -------------------------------------------------------------------------


# Methods under this prefix are answered without the cluster token (see TokenCheck).
OPEN_SERVICE_PREFIX = "/grpc.health.v1.Health/"


class TokenCheck(grpc.aio.ServerInterceptor):
    """Refuses every call whose `weir-token` metadata is missing or wrong.

    A refused call gets UNAUTHENTICATED and a log line (peer, method); its handler never
    runs, and the refusing handler has no deserializer, so the request stays raw bytes.
    The standard health service passes without a token: it runs no user code, says only
    SERVING or not, and Kubernetes' gRPC probes cannot send metadata.
    """

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("TokenCheck needs a non-empty token (an empty one means no check)")
        self._expected = token.encode()

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Pass the call on if its token is right; else answer with a refusal."""
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        handler = await continuation(handler_call_details)
        if method.startswith(OPEN_SERVICE_PREFIX):
            return handler
        problem = self._problem(handler_call_details.invocation_metadata)  # type: ignore[attr-defined]
        if problem is None or handler is None:
            return handler
        return _refusal(handler, method, problem)

    def _problem(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
        """None if the metadata holds the right token, else what is wrong with it."""
        for key, value in metadata or ():
            if key == TOKEN_METADATA_KEY:
                given = value.encode() if isinstance(value, str) else value
                return None if hmac.compare_digest(given, self._expected) else "wrong"
        return "missing"


def _refusal(handler: grpc.RpcMethodHandler, method: str, problem: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` (unary or streaming, each way) that ends the
    call with UNAUTHENTICATED. Without a deserializer, gRPC hands it raw bytes: nothing of
    the request is parsed."""

    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        log.warning("refused a call without the cluster token", peer=context.peer(),
                    method=method, token=problem)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED_DETAILS)

    # A coroutine (not an async generator) serves every kind on a grpc.aio server: a
    # streaming response is then written through the context, and this one writes nothing.
    make = {(False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler}
    return make[(handler.request_streaming, handler.response_streaming)](refuse)  # type: ignore[operator]


def server(*, options: ChannelOptions = (), token: str | None = None) -> grpc.aio.Server:
    """A grpc.aio server for Weir's own services: with a token (default `cluster_token()`),
    every call must carry it. Not for the public ingresses, which stay open."""
    token = cluster_token() if token is None else token
    interceptors = [TokenCheck(token)] if token else None
    return grpc.aio.server(options=list(options), interceptors=interceptors)


# --- client side -------------------------------------------------------------------------


class _WithToken:
    """A multi-callable of a grpc.aio channel whose calls carry the token."""

    __slots__ = ("_call", "_pair")

    def __init__(self, call: Any, pair: tuple[str, str]) -> None:
        self._call = call
        self._pair = pair

    def __call__(self, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
        """Start the call with the token added to `metadata`."""
        return self._call(*args, metadata=(*(metadata or ()), self._pair), **kwargs)


class _TokenChannel(grpc.aio.Channel):
    """A grpc.aio channel whose every call carries the token.

    Not a grpc.aio client interceptor: grpc.aio runs an intercepted call in a task of its
    own and feeds an intercepted stream's writes through a queue, which measured about
    +40 µs per unary call and +30 µs per message on a bidi stream (bench/auth_cost.py);
    adding the metadata where the call starts costs about a microsecond.
    """

    def __init__(self, inner: grpc.aio.Channel, token: str) -> None:
        self._inner = inner
        self._pair = (TOKEN_METADATA_KEY, token)

    async def __aenter__(self) -> _TokenChannel:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._inner.__aexit__(*exc_info)

    async def close(self, grace: float | None = None) -> None:
        """Close the channel (see grpc.aio.Channel.close)."""
        await self._inner.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """The channel's connectivity (see grpc.aio.Channel.get_state)."""
        return self._inner.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """Wait until the connectivity changes (see grpc.aio.Channel)."""
        await self._inner.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        """Wait until the channel is READY."""
        await self._inner.channel_ready()

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        """A unary method whose calls carry the token."""
        return _WithToken(self._inner.unary_unary(*args, **kwargs), self._pair)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        """A server-streaming method whose calls carry the token."""
        return _WithToken(self._inner.unary_stream(*args, **kwargs), self._pair)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        """A client-streaming method whose calls carry the token."""
        return _WithToken(self._inner.stream_unary(*args, **kwargs), self._pair)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        """A bidi method whose calls carry the token."""
        return _WithToken(self._inner.stream_stream(*args, **kwargs), self._pair)


def channel(address: str, *, options: ChannelOptions = (),
            token: str | None = None) -> grpc.aio.Channel:
    """The grpc.aio channel to a Weir server at `address`: every call on it carries the
    token (default `cluster_token()`; none if empty)."""
    token = cluster_token() if token is None else token
    plain = grpc.aio.insecure_channel(address, options=list(options))
    return _TokenChannel(plain, token) if token else plain


class _SyncCallDetails(
        collections.namedtuple("_SyncCallDetails", ("method", "timeout", "metadata",
                                                    "credentials", "wait_for_ready",
                                                    "compression")),
        grpc.ClientCallDetails):
    """The sync API's call details, rebuilt with the token in the metadata."""


class _SyncToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                 grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the token to every call of a sync channel, whatever its kind."""

    def __init__(self, token: str) -> None:
        self._pair = (TOKEN_METADATA_KEY, token)

    def _with_token(self, details: Any) -> _SyncCallDetails:
        return _SyncCallDetails(
            details.method, details.timeout, (*(details.metadata or ()), self._pair),
            details.credentials, getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any,
                              request: Any) -> Any:
        """A unary call, with the token."""
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any,
                               request: Any) -> Any:
        """A server-streaming call, with the token."""
        return continuation(self._with_token(client_call_details), request)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                               request_iterator: Any) -> Any:
        """A client-streaming call, with the token."""
        return continuation(self._with_token(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any,
                                request_iterator: Any) -> Any:
        """A bidi call, with the token."""
        return continuation(self._with_token(client_call_details), request_iterator)


def sync_channel(address: str, *, options: ChannelOptions = (),
                 token: str | None = None) -> grpc.Channel:
    """The blocking (non-asyncio) channel to a Weir server at `address`: every call on it
    carries the token (default `cluster_token()`; none if empty)."""
    token = cluster_token() if token is None else token
    plain = grpc.insecure_channel(address, options=list(options))
    return grpc.intercept_channel(plain, _SyncToken(token)) if token else plain
