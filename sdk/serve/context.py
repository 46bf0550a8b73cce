"""`weir.serve.context`: Ray's `ray.serve.context` module path: the replica's context and
the request being served, under Ray's names (`_get_serve_request_context()` is what Ray's
docs and examples call to read the request id)."""

from weir.runtime_context import (
    ReplicaContext,
    ReplicaRank,
    RequestContext,
    current_request,
    get_replica_context,
    replica_context_or_none,
)

#: Ray's name for the request context's type.
_RequestContext = RequestContext


def _get_serve_request_context() -> RequestContext:
    """The request being served (Ray's private-but-documented accessor)."""
    return current_request()


def _get_internal_replica_context() -> ReplicaContext | None:
    """The replica's context, or None outside a replica (Ray's accessor)."""
    return replica_context_or_none()


__all__ = [
    "ReplicaContext",
    "ReplicaRank",
    "RequestContext",
    "_RequestContext",
    "_get_internal_replica_context",
    "_get_serve_request_context",
    "get_replica_context",
]
