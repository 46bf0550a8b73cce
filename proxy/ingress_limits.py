"""The HTTP ingress's limits on what a client may hold: header size and count, how long its
headers may take, how many connections are open at once. One home, so that hypercorn and
uvicorn are configured from the same numbers.

Why these: a proxy is the one Weir process facing untrusted clients. A client that sends a
huge header block costs memory; one that trickles its headers a byte at a time ("slowloris")
holds a connection (and a file descriptor) for ever at no cost to itself; many of them
exhaust the process. What each server offers, and what Weir adds:
- header bytes: hypercorn's `h11_max_incomplete_size` (400 past it); uvicorn's
  `h11_max_incomplete_event_size`, and `GuardedProtocol` answers 431 past it;
- header count: `HeaderCountLimit`, an ASGI wrapper (431), on both;
- header deadline: hypercorn has no knob of its own, but its idle timer runs from the
  connection's start until a request's headers are complete, so http_options'
  keep_alive_timeout_s bounds them; on uvicorn, `GuardedProtocol` closes the connection;
- connections: uvicorn's `limit_concurrency` (503 past it); hypercorn has no knob (only the
  listen backlog), so Weir cannot bound them there.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from weir.proxy.admission import admit_in_scope, answer_text, shed_response

if TYPE_CHECKING:
    from weir.proxy.admission import Admission

log = structlog.get_logger("weir.proxy")

#: Defaults: well above what browsers and HTTP clients send (Chrome caps a header block at
#: 256 KiB, nginx's default buffer is 8 KiB x 4), well below what would hurt the process.
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_HEADERS = 100
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 10_000


@dataclass(frozen=True)
class IngressLimits:
    """What one client connection may hold. `max_connections` 0: no limit."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_headers: int = DEFAULT_MAX_HEADERS
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def hypercorn_settings(self) -> dict[str, Any]:
        """hypercorn.config.Config attributes for these limits (those it has)."""
        return {"h11_max_incomplete_size": self.max_header_bytes,
                "h2_max_header_list_size": self.max_header_bytes}

    def uvicorn_settings(self, admission: Admission | None = None) -> dict[str, Any]:
        """uvicorn.Config keywords for these limits (with `GuardedProtocol` as `http`,
        applying `admission` to each request before its task exists)."""
        return {"h11_max_incomplete_event_size": self.max_header_bytes,
                "limit_concurrency": self.max_connections or None,
                "http": guarded_protocol(self, admission)}


def too_many_headers(headers: list[tuple[bytes, bytes]], limit: int) -> bool:
    """Whether a request's header list passes `limit` entries. Pure."""
    return len(headers) > limit


_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
              b"connection: close\r\ncontent-length: %d\r\n\r\n%s")


def _refusal(text: str) -> bytes:
    body = text.encode()
    return _TOO_LARGE % (len(body), body)


class HeaderCountLimit:
    """ASGI wrapper answering 431 to a request with more than `limit` headers (both servers
    parse them all first: their byte limit bounds that work)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and too_many_headers(scope["headers"],
                                                                       self.limit):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await answer_text(send, 431, f"request has {len(scope['headers'])} headers; this "
                                         f"proxy takes at most {self.limit}",
                              (b"connection", b"close"))
            return
        await self.app(scope, receive, send)


def guarded_protocol(limits: IngressLimits, admission: Admission | None = None) -> type:
    """uvicorn's HTTP/1.1 protocol class with a header deadline, a header byte limit and
    (given `admission`) admission before the request's task.

    uvicorn starts no timer before a connection's first request, and its keep-alive timer
    stops at the first byte of the next one: a client sending one header byte a second
    would keep its connection for ever. A request's headers are complete when uvicorn
    starts its request cycle (both its implementations do that then), so the guard needs
    nothing of their parsers."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # httptools is optional in uvicorn
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

    class GuardedProtocol(Base):  # type: ignore[misc,valid-type]
        _deadline: asyncio.TimerHandle | None = None
        _header_bytes = 0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._await_headers()

        def _await_headers(self) -> None:
            self._header_bytes = 0
            self._deadline = asyncio.get_running_loop().call_later(
                limits.header_timeout_s, self._too_slow)

        def _too_slow(self) -> None:
            log.info("client too slow to send its headers; connection closed",
                     client=self.client, timeout_s=limits.header_timeout_s)
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            if self._deadline is None and (cycle is None or cycle.response_complete):
                self._await_headers()  # the next request on a kept-alive connection
            super().data_received(data)
            if self._deadline is None:
                return
            if self.cycle is not cycle and self.cycle is not None:
                self._deadline.cancel()
                self._deadline = None
                return
            self._header_bytes += len(data)
            if self._header_bytes > limits.max_header_bytes and not self.transport.is_closing():
                self._deadline.cancel()
                self._deadline = None
                self.transport.write(_refusal(
                    f"request headers larger than {limits.max_header_bytes} bytes"))
                self.transport.close()

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            # uvicorn calls this once a request's headers are parsed (or a pipelined one's
            # turn comes): the last moment before the request costs a task.
            if admission is None:
                super()._start_asgi_task(cycle, app)
                return
            key, refusal = admission.check(cycle.scope["path"], cycle.scope["method"])
            if not refusal:
                admit_in_scope(admission, cycle.scope, key)
                super()._start_asgi_task(cycle, app)
                return
            # Answered here, as the cycle's own send would: complete, so that the parser
            # drops the request's body and the connection takes its next request.
            self.transport.write(shed_response(refusal, cycle.keep_alive))
            cycle.response_started = cycle.response_complete = True
            cycle.message_event.set()
            if not cycle.keep_alive:
                self.transport.close()
            cycle.on_response()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

    return GuardedProtocol
