"""Deployments with `@serve.batch` methods, for tests/e2e/test_batching.py."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from weir import serve

#: Long enough that concurrent callers on loaded cores land in one batch; a full batch does
#: not wait for it.
WAIT_S = 1.0


@serve.deployment(max_ongoing_requests=32)
class AsyncBatcher:
    """`__call__` itself is batched: each HTTP request is one item."""

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=WAIT_S)
    async def __call__(self, requests: list[Request]) -> list[dict[str, Any]]:
        return [{"x": int(r.query_params["x"]), "batch_size": len(requests), "pid": os.getpid()}
                for r in requests]

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.__call__.set_max_batch_size(config["max_batch_size"])  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=WAIT_S)
    async def explode(self, xs: list[int]) -> list[int]:
        raise ValueError(f"a batch of {len(xs)} exploded")

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=WAIT_S)
    async def drop_one(self, xs: list[int]) -> list[int]:
        return xs[1:]

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=WAIT_S)
    async def count_down(self, starts: list[int]) -> AsyncIterator[list[Any]]:
        for step in range(max(starts)):
            yield [s - step if s > step else StopIteration for s in starts]


@serve.deployment(max_ongoing_requests=32)
class SyncBatcher:
    """A plain `def` batch: the replica runs it in one of its callers' threads."""

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=WAIT_S)
    def __call__(self, requests: list[Request]) -> list[dict[str, Any]]:
        thread = threading.current_thread().name
        return [{"x": int(r.query_params["x"]), "batch_size": len(requests), "thread": thread}
                for r in requests]


@serve.deployment(max_ongoing_requests=32)
@serve.batch(max_batch_size=8, batch_wait_timeout_s=WAIT_S)
async def batched_function(requests: list[Request]) -> list[str]:
    return [f"{r.query_params['x']}/{len(requests)}" for r in requests]


async_app = AsyncBatcher.bind()
sync_app = SyncBatcher.bind()
function_app = batched_function.bind()
