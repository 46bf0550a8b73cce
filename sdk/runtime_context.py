"""What user code can ask about where it runs: the replica (`serve.get_replica_context()`)
and the request being served (Ray's `serve.context._get_serve_request_context()`).

The replica process sets its ReplicaContext once, when it is told what to run; the
request context is a contextvar the replica sets for each call, so every task and thread
working on that call (sync code runs in a thread pool: `contextvars.copy_context()` carries
it there) sees its own request, and a handle call made while serving it carries its request
id on to the next deployment, as Ray's does.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

from weir.exceptions import RayServeException

__all__ = [
    "ReplicaContext",
    "ReplicaRank",
    "RequestContext",
    "current_request",
    "get_replica_context",
    "replica_context_or_none",
    "serving",
    "set_replica_context",
]


@dataclass(frozen=True)
class ReplicaRank:
    """A replica's place among its deployment's replicas, as Ray gives it: `rank` from 0 to
    world_size - 1 across the deployment; `node_rank` and `local_rank` within nodes."""

    rank: int
    node_rank: int = 0
    local_rank: int = 0

    def __int__(self) -> int:
        return self.rank


@dataclass
class ReplicaContext:
    """The replica this code runs in (Ray's `ray.serve.context.ReplicaContext` fields)."""

    app_name: str
    deployment: str
    replica_id: str
    #: The instance of the deployment's class (or its function) once constructed.
    servable_object: Any = None
    rank: ReplicaRank | None = None
    world_size: int = 1

    @property
    def replica_tag(self) -> str:
        """Ray's older name for the replica's id."""
        return self.replica_id


@dataclass(frozen=True)
class RequestContext:
    """The request being served (Ray's `_RequestContext` fields that Weir has)."""

    request_id: str = ""
    route: str = ""
    app_name: str = ""
    multiplexed_model_id: str = ""
    is_http_request: bool = False


_replica: ReplicaContext | None = None
_NO_REQUEST = RequestContext()
_request: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "weir_request", default=None)


def set_replica_context(context: ReplicaContext) -> None:
    """The replica process says what it runs (before the constructor, so that __init__ can
    ask)."""
    global _replica
    _replica = context


def replica_context_or_none() -> ReplicaContext | None:
    """This process's replica context, or None outside a replica."""
    return _replica


def get_replica_context() -> ReplicaContext:
    """The replica this code runs in; RayServeException outside a deployment's replica."""
    if _replica is None:
        raise RayServeException(
            "`serve.get_replica_context()` may only be called from within a deployment's "
            "replica (its constructor or its methods), not from a driver script")
    return _replica


def current_request() -> RequestContext:
    """The request this task or thread is serving (an empty one outside a request)."""
    return _request.get() or _NO_REQUEST


def serving(request: RequestContext) -> contextvars.Token[RequestContext | None]:
    """Set the request being served in the current context; returns the token to reset."""
    return _request.set(request)
