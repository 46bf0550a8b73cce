"""What a replica's health-check answer promises the leader: when the next one comes.

A replica checks itself each health_check_period_s and sends each outcome to the leader
(`weir.replica.session`); the leader counts a failure when the next answer does not come
when promised (`weir.controller.health_prober`). Both sides take the promise from here. A
healthy answer may wait a while for a report that goes out anyway (`answer_hold`), so that
a replica under load sends no message of its own for its checks.
"""

from __future__ import annotations

#: A healthy answer waits up to this fraction of health_check_period_s for a report that
#: goes out anyway, and rides on it (a replica under load reports every 50 ms; an idle one
#: sends the answer alone).
ANSWER_HOLD_FRACTION = 0.5
#: What a promise adds for the replica's loop and the network to be late by.
ANSWER_MARGIN_S = 1.0


def answer_hold(period_s: float) -> float:
    """How long a healthy answer may wait for a report to ride on. Pure."""
    return period_s * ANSWER_HOLD_FRACTION


def next_answer_within(period_s: float, timeout_s: float) -> float:
    """How soon after one answer the next reaches the leader, at the latest: the next
    check starts a period after this one started (so at most a period after this answer
    went out), ends within the timeout, and waits at most `answer_hold` before it goes out;
    plus ANSWER_MARGIN_S. Pure."""
    return period_s + timeout_s + answer_hold(period_s) + ANSWER_MARGIN_S
