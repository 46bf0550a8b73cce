"""The bare baselines Weir is measured against, each run as its own process.

- `plain`: a starlette app answering "ok" on hypercorn: the floor of any proxy on hypercorn.
- `echo`: a grpc.aio server whose one unary method returns the request bytes.
- `hop`: the `plain` app, except that each request makes one grpc.aio call to `echo` and
  answers with its reply: the floor of a proxy that forwards over gRPC, as Weir's does.

The gRPC side uses a generic handler over raw bytes (no serializers), so the bench needs
no generated code and no build step. Run as `python -m bench.bare_servers KIND --port N`;
SIGTERM or SIGINT stops the server cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable

import grpc
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

ECHO_SERVICE = "bench.Echo"
ECHO_METHOD = "Call"
HOP_PAYLOAD = b"ok"

EchoCall = Callable[[bytes], Awaitable[bytes]]


def plain_app() -> Starlette:
    """The bare starlette app: GET / answers "ok"."""

    async def ok(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", ok)])


def hop_app(call: EchoCall) -> Starlette:
    """The bare hop: GET / sends one unary gRPC call through `call` and answers its reply."""

    async def forward(request: Request) -> Response:
        try:
            reply = await call(HOP_PAYLOAD)
        except grpc.aio.AioRpcError as exc:
            return PlainTextResponse(f"echo failed: {exc.code().name}", status_code=502)
        return Response(reply, media_type="text/plain")

    return Starlette(routes=[Route("/", forward)])


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def serve_echo(port: int, stop: asyncio.Event) -> None:
    """Serve the echo method on 127.0.0.1:`port` until `stop` is set."""
    handler = grpc.method_handlers_generic_handler(
        ECHO_SERVICE, {ECHO_METHOD: grpc.unary_unary_rpc_method_handler(_echo)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await stop.wait()
    await server.stop(grace=1.0)


async def serve_http(app: Starlette, port: int, stop: asyncio.Event) -> None:
    """Serve `app` with hypercorn on 127.0.0.1:`port`, configured as Weir's proxy is."""
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.keep_alive_timeout = 5
    config.graceful_timeout = 2
    await hypercorn_serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


async def serve_hop(port: int, echo_port: int, stop: asyncio.Event) -> None:
    """Serve the hop app on `port`, forwarding to the echo server on `echo_port`."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as channel:
        call = channel.unary_unary(f"/{ECHO_SERVICE}/{ECHO_METHOD}")
        await serve_http(hop_app(call), port, stop)


async def _main(opts: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if opts.kind == "echo":
        await serve_echo(opts.port, stop)
    elif opts.kind == "hop":
        await serve_hop(opts.port, opts.echo_port, stop)
    else:
        await serve_http(plain_app(), opts.port, stop)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m bench.bare_servers`."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_servers")
    parser.add_argument("kind", choices=("plain", "hop", "echo"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--echo-port", type=int, default=0, help="For `hop`: the echo server.")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="Event loop (Weir's processes use uvloop).")
    opts = parser.parse_args(argv)
    if opts.kind == "hop" and not opts.echo_port:
        parser.error("hop needs --echo-port")
    if opts.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(_main(opts))


if __name__ == "__main__":
    main()
