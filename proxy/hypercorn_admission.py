"""Admission in hypercorn's HTTP/1.1 protocol: shed a request before hypercorn gives it a
stream, a task, an app queue and an ASGI round trip.

hypercorn has no supported hook between its parser and the task it spawns per request (no
protocol class in its config, as uvicorn has), so `AdmissionGate` alone would shed there,
and a shed request would cost hypercorn's whole request cycle: 199-227 us of CPU through
the gate against 112-117 us in the protocol (`python bench/overload.py --shed-cost 3` on
the 2-core machine; docs/performance.md, "Overload, round 2"). At 4,000 req/s offered that
is most of a core.

So, while the proxy serves on hypercorn, `hypercorn.protocol.H11Protocol` (the name its
`ProtocolWrapper` looks up for each connection) is a subclass whose `_create_stream` asks
`Admission.check` first. A request it sheds gets the 503 the uvicorn protocol writes
(`weir.proxy.admission.shed_response`, made without h11, whose parser is then replaced by
a fresh one holding the bytes after the request) in one write, and the connection takes
its next request; a request with a body, or from a client that asked to close, closes the
connection instead (hypercorn's own error answers do the same; the body is never read). A
request it admits goes on as before, counted in at once and marked as checked in its ASGI
scope (`admit_in_scope`), for `AdmissionGate` to count it out when its app call ends.
WebSocket upgrades and HTTP/2 (`H2Protocol`) are left to the gate.

Two costs of hypercorn's own go with it (docs/performance.md, "Round 4"). From a
connection's first request on, its keep-alive timer is the protocol's: one `call_later`
that looks again when it fires, instead of hypercorn's task cancelled and awaited (the
request waiting loop turns for it) and two tasks made per request; it closes the
connection keep_alive_timeout after its last answer, shed or not, or at shutdown. (Round 2
left hypercorn's timer running through shed requests to save that cost, so under load a
connection whose requests were shed was closed every keep_alive_timeout, racing its next
request.) And a response's head goes out with its first body chunk, one send through
hypercorn's locked write instead of two.

This leans on hypercorn's private `_create_stream(request)`, `_check_protocol`,
`_send_h11_event` and `connection`: `supported()` checks that the first is there and, if
not, hypercorn is left alone (the gate still sheds). Tested against the installed hypercorn
(tests/proxy/test_hypercorn_admission.py runs a real server).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import structlog

from weir.proxy.admission import admit_in_scope, shed_response

if TYPE_CHECKING:
    from weir.proxy.admission import Admission

log = structlog.get_logger("weir.proxy")

#: Request headers whose presence means the request has a body (or asks for an upgrade).
_BODY_HEADERS = (b"content-length", b"transfer-encoding")


def request_facts(headers: Any) -> tuple[bool, bool]:
    """From an h11 request's (lower-cased) headers: whether it asks for an upgrade, and
    whether it has a body. Pure."""
    upgrade = body = False
    for name, value in headers:
        if name == b"upgrade":
            upgrade = True
        elif name in _BODY_HEADERS and value not in (b"0", b""):
            body = True
    return upgrade, body


def keeps_alive(request: Any) -> bool:
    """Whether an h11 request lets its connection live on after the answer, by h11's rule:
    HTTP/1.1 or later, without `connection: close`. Pure."""
    if request.http_version < b"1.1":
        return False
    for name, value in request.headers:
        if name == b"connection" and b"close" in (t.strip().lower() for t in value.split(b",")):
            return False
    return True


def admitting_protocol(admission: Admission) -> type:
    """hypercorn's H11Protocol, with `admission` refusing requests before their stream."""
    import h11
    from hypercorn.events import Closed, RawData, Updated
    from hypercorn.protocol.h11 import H11Protocol

    class AdmittingH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._to_server = self.send
            self.send = self._send_or_hold  # type: ignore[method-assign]
            self._busy_held = False
            #: The keep-alive timer is this protocol's (`_take_over_keep_alive`).
            self._keeps_alive = False
            self._idle_since: float | None = None
            self._idle_timer: asyncio.TimerHandle | None = None
            self._closer: asyncio.Task[None] | None = None
            self._shutdown_watch: asyncio.Task[None] | None = None
            #: A response's head, held for its first body chunk (`_send_h11_event`).
            self._head = b""

        async def _send_h11_event(self, event: Any) -> None:
            # A response's head waits for its first body chunk (or its end) and goes in
            # the same write: one send system call, lock and drain a response, not two.
            # (The replica already sends a response's start with its first chunk.)
            try:
                data = self.connection.send(event)
            except h11.LocalProtocolError:
                if self.connection.their_state != h11.ERROR:
                    raise
                return  # as hypercorn: nothing more goes to a client in error
            if isinstance(event, h11.Response):
                self._head = data or b""
                return
            head, self._head = self._head, b""
            data = head + data if data else head
            if data:
                await self.send(RawData(data=data))

        async def _send_or_hold(self, event: Any) -> None:
            # hypercorn stops the connection's keep-alive timer once a request's headers
            # are in and starts a new one once it is answered: a task cancelled and
            # awaited (the request waits loop turns for it), two made, a quarter of a shed
            # request's cost. A request shed at once needs neither, so the stop waits for
            # the verdict; an admitted one finds the timer this protocol's own.
            if isinstance(event, Updated):
                if not event.idle:
                    self._busy_held = True
                elif self._keeps_alive:
                    self._went_idle()
                else:
                    await self._to_server(event)
                return
            if isinstance(event, Closed) and self._head:
                head, self._head = self._head, b""
                await self._to_server(RawData(data=head))
            await self._to_server(event)

        async def _go_busy(self, own_timer: bool = False) -> None:
            if self._busy_held:
                self._busy_held = False
                self._idle_since = None
                await self._own_keep_alive(own_timer)

        async def _own_keep_alive(self, own_timer: bool = True) -> None:
            # Once a connection: hypercorn's timer, running since the connection opened,
            # stops, and (`own_timer`) this protocol's takes over.
            if not self._keeps_alive:
                await self._to_server(Updated(idle=False))
                if own_timer:
                    self._keeps_alive = True
                    # hypercorn's timer also closed an idle connection at shutdown.
                    self._shutdown_watch = asyncio.get_running_loop().create_task(
                        self._close_at_shutdown())

        async def _close_at_shutdown(self) -> None:
            await self.context.terminated.wait()
            if self._idle_since is not None:
                self._idle_check()

        def _went_idle(self) -> None:
            # One timer a keep-alive period, not two tasks a request: it looks again when it
            # fires and sleeps on while the connection was busy since.
            loop = asyncio.get_running_loop()
            self._idle_since = loop.time()
            if self._idle_timer is None:
                self._idle_timer = loop.call_later(self.config.keep_alive_timeout,
                                                   self._idle_check)
            if self.context.terminated.is_set():
                self._idle_check()

        def _idle_check(self) -> None:
            self._idle_timer = None
            if self._idle_since is None or self._closer is not None:
                return  # busy: the next answer starts the timer again
            loop = asyncio.get_running_loop()
            left = self._idle_since + self.config.keep_alive_timeout - loop.time()
            if left > 0 and not self.context.terminated.is_set():
                self._idle_timer = loop.call_later(left, self._idle_check)
                return
            # As hypercorn closes an idle connection: the protocol first, then the socket.
            self._closer = loop.create_task(self._close_idle())

        async def _close_idle(self) -> None:
            await self.handle(Closed())
            await self._to_server(Closed())

        async def handle(self, event: Any) -> None:
            if isinstance(event, Closed):
                if self._idle_timer is not None:
                    self._idle_timer.cancel()
                    self._idle_timer = None
                watch, self._shutdown_watch = self._shutdown_watch, None
                if watch is not None and watch is not asyncio.current_task():
                    watch.cancel()
            await super().handle(event)

        async def _check_protocol(self, event: h11.Request) -> None:
            try:
                await super()._check_protocol(event)
            except BaseException:  # h2c or HTTP/2: hypercorn's H2Protocol takes over
                await self._go_busy()
                raise

        async def _create_stream(self, request: h11.Request) -> None:
            upgrade, body = request_facts(request.headers)
            if upgrade:
                await self._go_busy()
                await super()._create_stream(request)
                return
            path = unquote(request.target.partition(b"?")[0].decode("ascii"))
            key, refusal = admission.check(path, request.method.decode("ascii").upper())
            if refusal:
                await self._own_keep_alive()
                await self._refuse(refusal, body, keeps_alive(request))
                return
            await self._go_busy(own_timer=True)
            await super()._create_stream(request)
            # Counted in now, not when its task reaches the gate: the requests parsed in
            # one loop iteration would all pass otherwise, and the gate shed them after all.
            scope = getattr(self.stream, "scope", None)
            if isinstance(scope, dict):
                admit_in_scope(admission, scope, key)

        async def _refuse(self, text: str, body: bool, client_keeps_alive: bool) -> None:
            # The uvicorn protocol's bytes, built without h11: its three sends (events
            # built, headers checked, state moved) cost about as much as the rest of a
            # refusal's Python. h11 never sees the answer, so a fresh parser takes the
            # connection's next request, with the bytes that came after this one.
            self.keep_alive_requests += 1
            keep_alive = (client_keeps_alive and not body
                          and self.keep_alive_requests < self.config.keep_alive_max_requests
                          and not self.context.terminated.is_set())
            await self.send(RawData(data=shed_response(text, keep_alive)))
            await self.context.mark_request()
            self._busy_held = False
            if keep_alive:
                self._went_idle()  # an answer like any other: idle from now
                trailing, closed = self.connection.trailing_data
                self.connection = fresh = h11.Connection(
                    h11.SERVER, max_incomplete_event_size=self.config.h11_max_incomplete_size)
                if trailing or closed:
                    fresh.receive_data(trailing)
                    if closed:
                        fresh.receive_data(b"")
                return
            await self.send(Closed())  # closing stops the timer

    return AdmittingH11Protocol


def supported() -> bool:
    """Whether this hypercorn has the protocol method the admission overrides."""
    try:
        from hypercorn.protocol.h11 import H11Protocol
    except ImportError:
        return False
    return callable(getattr(H11Protocol, "_create_stream", None))


@contextlib.contextmanager
def admission_in_protocol(admission: Admission | None) -> Iterator[bool]:
    """While inside: hypercorn's HTTP/1.1 connections check `admission` in their protocol
    (None: leave hypercorn as it is). Yields whether they do."""
    if admission is None or not supported():
        if admission is not None:
            log.warning("hypercorn has no H11Protocol._create_stream: admission runs in the "
                        "ASGI gate only")
        yield False
        return
    import hypercorn.protocol

    original = hypercorn.protocol.H11Protocol
    hypercorn.protocol.H11Protocol = admitting_protocol(admission)  # type: ignore[assignment,misc]
    try:
        yield True
    finally:
        hypercorn.protocol.H11Protocol = original  # type: ignore[misc]
