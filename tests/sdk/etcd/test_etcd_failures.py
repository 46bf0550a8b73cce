"""weir.etcd.etcd_failures: what an aetcd or gRPC failure means, without an etcd."""

from __future__ import annotations

import aetcd

from weir.etcd.etcd_failures import describe, looks_like_failover, timed_out


def test_a_passing_failure_is_told_from_etcd_gone() -> None:
    # What gRPC says: a member died under the call, a member has no leader (both pass in a
    # second or two), or nothing accepts a connection at all (report at once).
    assert looks_like_failover(Exception("Stream removed (Socket closed)"))
    assert looks_like_failover(Exception("etcdserver: no leader"))
    assert not looks_like_failover(
        Exception("failed to connect to all addresses; last error: Connection refused")
    )


def test_a_timeout_is_unavailable_and_looks_like_failover_even_behind_a_cause() -> None:
    timeout = aetcd.ConnectionTimeoutError("timed out")
    wrapped = RuntimeError("watch failed")
    wrapped.__cause__ = timeout
    assert timed_out(timeout) and timed_out(wrapped)
    assert looks_like_failover(wrapped)
    assert describe(timeout, 0.5) == (True, "no answer within 0.5 s")


def test_a_refusal_is_not_unavailable() -> None:
    assert describe(ValueError("bad request"), 1.0) == (False, "bad request")
    assert describe(aetcd.ConnectionFailedError("gone"), 1.0) == (True, "gone")
    assert not timed_out(aetcd.ConnectionFailedError("gone"))


def test_a_member_without_a_leader_is_unavailable_whatever_the_code() -> None:
    # etcd's own deadline, passed while it waited for a leader, came as a refusal.
    leaderless = aetcd.ClientError("context deadline exceeded")
    assert describe(leaderless, 1.0) == (True, "context deadline exceeded")
    assert looks_like_failover(leaderless)
    assert describe(aetcd.ClientError("etcdserver: request timed out"), 1.0)[0]
