"""`weir.serve.grpc_util`: what a deployment method served through the gRPC ingress sees
of its call, as in Ray (`ray.serve.grpc_util`).

A method that declares a `grpc_context` parameter gets a `RayServegRPCContext`: the
client's metadata, its address and the time left, and the status and trailing metadata
to end the call with. It is a plain object on the replica (no live gRPC call behind it):
what the method sets travels back to the ingress with the call's last reply.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

import grpc

from weir.grpc_metadata import MetadataValue

T = TypeVar("T")

#: Ray's parameter name: a method that declares it gets the call's context.
GRPC_CONTEXT_PARAMETER = "grpc_context"


class RayServegRPCContext:
    """The context of one gRPC call served by a deployment (Ray's name and methods)."""

    def __init__(self, invocation_metadata: Sequence[tuple[str, MetadataValue]] = (),
                 peer: str = "", deadline: float | None = None) -> None:
        self._invocation_metadata = list(invocation_metadata)
        self._peer = peer
        #: Absolute UNIX time the call must end by, or None.
        self._deadline = deadline
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing_metadata: list[tuple[str, MetadataValue]] = []

    def invocation_metadata(self) -> list[tuple[str, MetadataValue]]:
        """The metadata the client sent, as (key, value) pairs."""
        return list(self._invocation_metadata)

    def peer(self) -> str:
        """The client's address as the ingress saw it (e.g. "ipv4:127.0.0.1:53124")."""
        return self._peer

    def time_remaining(self) -> float | None:
        """Seconds left before the call's deadline, or None if it has none."""
        return None if self._deadline is None else max(0.0, self._deadline - time.time())

    def code(self) -> grpc.StatusCode | None:
        """The status code the call will end with, if one was set."""
        return self._code

    def set_code(self, code: grpc.StatusCode) -> None:
        """End the call with `code` (also after a return: e.g. NOT_FOUND with a message)."""
        self._code = code

    def details(self) -> str:
        """The status details the call will end with."""
        return self._details

    def set_details(self, details: str) -> None:
        """End the call with these status details."""
        self._details = details

    def trailing_metadata(self) -> list[tuple[str, MetadataValue]]:
        """The trailing metadata set so far."""
        return list(self._trailing_metadata)

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, MetadataValue]]) -> None:
        """Send these (key, value) pairs to the client when the call ends (the last call
        wins, as in gRPC); the ingress adds the request id."""
        self._trailing_metadata = list(trailing_metadata)


class gRPCInputStream(AsyncIterator[T]):
    """The request messages of a client-streaming or bidirectional call, as they arrive
    (Ray's type for the parameter of such a method)."""

    def __init__(self, messages: AsyncIterator[T]) -> None:
        self._messages = messages

    def __aiter__(self) -> gRPCInputStream[T]:
        return self

    async def __anext__(self) -> T:
        return await anext(self._messages)


__all__ = ["GRPC_CONTEXT_PARAMETER", "RayServegRPCContext", "gRPCInputStream"]


