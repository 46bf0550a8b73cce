"""How long to wait before trying again: one exponential backoff for every retry loop.

Each loop that retries something that keeps failing (following the leader, waiting out an
election) owns one `Backoff`: it asks `next()` for the pause after each failure and calls
`reset()` once the thing works again, so the next failure starts short. The delays are
plain numbers, so a test checks them with no clock and no sleep.

Jitter only ever shortens a delay (by up to the given fraction): `maximum` stays a bound,
and the many processes that lose the same controller at the same moment (every replica and
proxy) spread their reconnects instead of arriving in lock-step.
"""

from __future__ import annotations

import asyncio
import random


class Backoff:
    """Delays growing by `factor` from `initial` up to `maximum` while failures go on.

    `jitter` (0 to 1) shortens each delay by a random fraction up to it; `rng` makes that
    fraction reproducible in tests.
    """

    def __init__(self, initial: float, maximum: float, factor: float = 2.0,
                 jitter: float = 0.0, *, rng: random.Random | None = None) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"a backoff needs 0 < initial <= maximum, got {initial}, {maximum}")
        if factor < 1:
            raise ValueError(f"a backoff's factor must be at least 1, got {factor}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"a backoff's jitter is a fraction from 0 to 1, got {jitter}")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._delay = initial
        #: Pauses taken since the last reset (0: the failure now is the first).
        self.failures = 0

    def next(self) -> float:
        """The pause before the next attempt; each call after a failure grows the next one."""
        delay = self._delay
        self.failures += 1
        self._delay = min(self.maximum, self._delay * self.factor)
        if self.jitter:
            delay *= 1.0 - self.jitter * self._rng.random()
        return delay

    def reset(self) -> None:
        """The thing worked: the next failure waits `initial` again."""
        self._delay = self.initial
        self.failures = 0

    async def sleep(self) -> None:
        """Wait the next pause (on the running event loop)."""
        await asyncio.sleep(self.next())
