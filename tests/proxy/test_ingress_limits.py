"""The ingress limits: one set of numbers for hypercorn and uvicorn, and the ASGI header
count check (no server needed)."""

from __future__ import annotations

import asyncio
from typing import Any

from weir.proxy.ingress_limits import HeaderCountLimit, IngressLimits, too_many_headers


def test_one_set_of_numbers_configures_both_servers() -> None:
    limits = IngressLimits(max_header_bytes=1000, max_connections=7)
    assert limits.hypercorn_settings()["h11_max_incomplete_size"] == 1000
    uvicorn = limits.uvicorn_settings()
    assert uvicorn["h11_max_incomplete_event_size"] == 1000
    assert uvicorn["limit_concurrency"] == 7
    assert IngressLimits(max_connections=0).uvicorn_settings()["limit_concurrency"] is None


def test_too_many_headers_counts_entries() -> None:
    assert not too_many_headers([(b"a", b"1")] * 3, 3)
    assert too_many_headers([(b"a", b"1")] * 4, 3)


def _run(app: Any, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "headers": headers}, receive, send))
    return sent


def test_header_count_limit_answers_431_and_passes_the_rest() -> None:
    reached = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope)

    app = HeaderCountLimit(inner, 2)
    sent = _run(app, [(b"a", b"1")] * 3)
    assert sent[0]["status"] == 431 and b"at most 2" in sent[1]["body"] and not reached
    assert _run(app, [(b"a", b"1")] * 2) == [] and len(reached) == 1
