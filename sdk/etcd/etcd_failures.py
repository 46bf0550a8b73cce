"""What an aetcd or gRPC failure means: etcd unreachable, failing over, or refusing.

Pure functions over exceptions, so the rules can be tested without an etcd.
:class:`~weir.etcd.etcd_connection.EtcdConnection` uses them to turn every failure into a
:class:`~weir.etcd.store.StoreError` naming etcd and its endpoints; a
:class:`~weir.etcd.store.StoreUnavailableError` then tells whether it looks like a passing
failover or like no member answering at all. No aetcd type leaves the etcd store.
"""

from __future__ import annotations

import asyncio

import aetcd
import grpc
import grpc.aio

from weir.etcd.store import StoreError

__all__ = [
    "being_cancelled",
    "compacted",
    "describe",
    "looks_like_failover",
    "rpc_error",
    "timed_out",
]

_UNAVAILABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

#: What gRPC says when no endpoint at all accepts a connection.
_NOTHING_REACHABLE = ("failed to connect to all addresses", "connections to all backends failing")

#: What an etcd member answers, whatever the status code, when it cannot serve a call for
#: want of a leader: its own deadline passed while it waited for one ("context deadline
#: exceeded" came with another code than DEADLINE_EXCEEDED, and a deploy made during an
#: election failed as a refusal instead of waiting it out), or it says so.
_LEADERLESS = ("context deadline exceeded", "etcdserver: request timed out",
               "etcdserver: leader changed", "etcdserver: no leader")


def rpc_error(exc: BaseException) -> grpc.aio.AioRpcError | None:
    """The gRPC error behind an aetcd or gRPC exception, if there is one."""
    while exc is not None:
        if isinstance(exc, grpc.aio.AioRpcError):
            return exc
        exc = exc.__cause__  # type: ignore[assignment]
    return None


def describe(exc: BaseException, timeout: float) -> tuple[bool, str]:
    """Whether ``exc`` means etcd is unreachable (or leaderless), and a readable detail."""
    unavailable, detail = _describe(exc, timeout)
    return unavailable or any(m in detail for m in _LEADERLESS), detail


def _describe(exc: BaseException, timeout: float) -> tuple[bool, str]:
    error = rpc_error(exc)
    if error is not None:
        code = error.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return True, f"no answer within {timeout:g} s"
        return code in _UNAVAILABLE_CODES, str(error.details() or code.name)
    if isinstance(exc, aetcd.ConnectionTimeoutError | aetcd.WatchTimeoutError):
        return True, f"no answer within {timeout:g} s"
    if isinstance(exc, aetcd.ConnectionFailedError | grpc.aio.UsageError):
        return True, str(exc) or type(exc).__name__
    return False, str(exc) or type(exc).__name__


def looks_like_failover(exc: BaseException) -> bool:
    """Whether an aetcd or gRPC failure looks like etcd failing over, which passes in a
    second or two: a call timed out, a member said it has no leader, or the connection to
    one member broke (it died under the call; the client moves to another). Not when no
    member can be reached at all, which a caller should report at once."""
    if timed_out(exc):
        return True
    error = rpc_error(exc)
    details = (error.details() or "") if error is not None else str(exc)
    return not any(marker in details for marker in _NOTHING_REACHABLE)


def timed_out(exc: BaseException) -> bool:
    """Whether ``exc``, or the failure behind it, is a call that got no answer in time."""
    error = rpc_error(exc)
    if error is not None:
        return bool(error.code() == grpc.StatusCode.DEADLINE_EXCEEDED)
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, aetcd.ConnectionTimeoutError | aetcd.WatchTimeoutError):
            return True
        cause = cause.__cause__
    return False


def compacted(exc: StoreError) -> bool:
    """Whether a watch failed because the history it needed was compacted away."""
    return isinstance(exc.__cause__, aetcd.RevisionCompactedError)


def being_cancelled() -> bool:
    """Whether the current task was asked to cancel (Python 3.11+ can tell).

    grpc.aio cancels the calls in flight when the channel closes, so a
    ``CancelledError`` may be the store closing under a caller rather than the caller
    being cancelled; this tells the two apart.
    """
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling is not None and cancelling() > 0)
