"""The standby's answer "not the leader; the leader is at X", as data both sides share.

Only the leading controller applies writes, streams the route table and holds replica
sessions; any other controller refuses those calls with FAILED_PRECONDITION and names the
leader in the trailing metadata key `weir-leader` (its admin address, empty while no leader
is known: an election is under way, or etcd is away). Clients read that key, never the
status text, which is for people and free to change.
"""

from __future__ import annotations

from typing import NoReturn

import grpc

#: The trailing-metadata key of a redirect: the leader's admin address, '' if unknown.
LEADER_METADATA_KEY = "weir-leader"


async def refuse_not_leader(context: grpc.aio.ServicerContext, address: str) -> NoReturn:
    """End the call as a redirect to the leader at `address` ('' if none is known)."""
    await context.abort(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"not the leader; leader at {address or 'unknown (election in progress)'}",
        trailing_metadata=((LEADER_METADATA_KEY, address),),
    )
    raise AssertionError("unreachable: abort raises")


def leader_from(exc: grpc.RpcError) -> str | None:
    """The leader's address a redirect names; '' for a redirect while no leader is known;
    None if `exc` is not a redirect. Takes the errors of sync and asyncio stubs alike."""
    code = getattr(exc, "code", None)
    trailing = getattr(exc, "trailing_metadata", None)
    if code is None or trailing is None or code() != grpc.StatusCode.FAILED_PRECONDITION:
        return None
    for key, value in trailing() or ():
        if key == LEADER_METADATA_KEY:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None
