"""A sweep: everything looked at again in turn, a share at a time, within a period.

Design. The leader's pass is level-triggered, but looking at everything on every pass (a
view of every replica, a judgement of every deployment) is the cost that grows with the
cluster. So each pass looks again at what it knows changed, and at the share of the rest
that a sweep through everything over `period_s` has come to: whatever changed without
anyone saying so is caught within that long, and passes that come often each take a
smaller share (the same work in all). Pure: the caller passes the members and the clock.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class Sweep(Generic[T]):
    """One sweep after another through the members, in the members' order."""

    def __init__(self) -> None:
        #: The sweep under way: the members when it began, and how far it got.
        self._members: list[T] = []
        self._at = 0
        self._began = 0.0

    def share(self, members: Collection[T], now: float, period_s: float) -> set[T]:
        """The share due by `now` (of those still members): every member of a sweep's
        start is in a share within `period_s` of it; once a sweep is through, the next
        takes every member now, starting where the last one was due to end (or now, if
        that is more than a period ago)."""
        if self._at >= len(self._members):
            start = self._began + period_s if self._members else now
            self._members, self._at = list(members), 0
            self._began = start if 0 <= now - start < period_s else now
        due = math.floor(len(self._members) * min(1.0, (now - self._began) / period_s))
        share = self._members[self._at:due]
        self._at = max(self._at, due)
        # Membership per member of the share (`in` a mapping's keys is O(1)), not an
        # intersection, which walks every member.
        return {m for m in share if m in members}
