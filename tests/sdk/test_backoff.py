"""weir.backoff: the delays a retry loop waits, as plain numbers."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from weir.backoff import Backoff


def test_doubles_up_to_the_maximum() -> None:
    backoff = Backoff(0.05, 1.0)
    assert [backoff.next() for _ in range(7)] == pytest.approx(
        [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_reset_starts_short_again() -> None:
    backoff = Backoff(0.1, 5.0, factor=3.0)
    assert [backoff.next() for _ in range(3)] == pytest.approx([0.1, 0.3, 0.9])
    backoff.reset()
    assert backoff.next() == pytest.approx(0.1)


def test_factor_one_is_a_fixed_pause() -> None:
    backoff = Backoff(0.2, 0.2, factor=1.0)
    assert {backoff.next() for _ in range(5)} == {0.2}


def test_jitter_only_shortens_and_varies() -> None:
    backoff = Backoff(1.0, 1.0, jitter=0.25, rng=random.Random(7))
    delays = [backoff.next() for _ in range(200)]
    assert all(0.75 <= d <= 1.0 for d in delays)
    assert max(delays) - min(delays) > 0.1  # spread, not one value


def test_jitter_is_reproducible_with_a_seed() -> None:
    first = Backoff(0.05, 1.0, jitter=0.5, rng=random.Random(3))
    second = Backoff(0.05, 1.0, jitter=0.5, rng=random.Random(3))
    assert [first.next() for _ in range(6)] == [second.next() for _ in range(6)]


@pytest.mark.parametrize(("args", "kwargs"), [
    ((0.0, 1.0), {}),
    ((2.0, 1.0), {}),
    ((0.1, 1.0), {"factor": 0.5}),
    ((0.1, 1.0), {"jitter": 1.5}),
])
def test_rejects_nonsense(args: tuple[float, float], kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(*args, **kwargs)


def test_sleep_waits_the_next_pause_and_grows() -> None:
    backoff = Backoff(0.02, 1.0)

    async def main() -> float:
        start = time.monotonic()
        await backoff.sleep()
        return time.monotonic() - start

    assert asyncio.run(main()) >= 0.019  # the event loop may wake a clock tick early
    assert backoff.next() == pytest.approx(0.04)
